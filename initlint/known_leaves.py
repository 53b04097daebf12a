"""Modules and functions that libraries declare untraceable, kept whole by default.

timm registers its layers that symbolic tracing cannot enter (``register_notrace_module``,
``register_notrace_function``); its own feature extractor traces with them as leaves, and so
does initlint. A library's registry is read only when the model's factory has imported the
library already: initlint never imports one just to ask.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch.nn as nn

_REGISTRIES = (("timm.layers", "get_notrace_modules", "get_notrace_functions"),)
"""(module, function listing leaf classes, function listing functions to wrap)."""


def known_leaves() -> tuple[list[type[nn.Module]], list[Callable]]:
    """Leaf classes and functions to wrap, from the registries of already-imported libraries."""
    modules: list[type[nn.Module]] = []
    functions: list[Callable] = []
    for package, list_modules, list_functions in _REGISTRIES:
        library = sys.modules.get(package)
        if library is None:
            continue
        modules += [m for m in getattr(library, list_modules, list)() if isinstance(m, type)]
        functions += [f for f in getattr(library, list_functions, list)() if callable(f)]
    return modules, functions

"""Where in the user's source a layer comes from, so findings point at a file and line.

Three sources, best first: the user's frame on the stack when torch.fx creates a node (where
the layer is *called*); the frame that registered the module while the factory ran
(where it is *defined*, e.g. the line of an ``nn.Sequential(...)``); the definition of the
nearest user-written module class or of the factory itself.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import CodeType

import torch
import torch.nn as nn

_LIBRARY_DIRS = tuple(
    str(Path(p).resolve().parent) + os.sep for p in (torch.__file__, __file__)
)


@dataclass(frozen=True)
class SourceLocation:
    file: str
    line: int

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line}

    def display_path(self) -> Path:
        """Relative to the working folder when inside it (as CI annotations want), else absolute."""
        file, here = Path(self.file), Path.cwd()
        return file.relative_to(here) if file.is_relative_to(here) else file


@functools.lru_cache(maxsize=4096)
def is_user_file(filename: str) -> bool:
    """Neither torch's nor initlint's (cached: every traced node asks about the same files)."""
    if filename.startswith("<"):
        return False
    resolved = str(Path(filename).resolve())
    return not resolved.startswith(_LIBRARY_DIRS)


def innermost_user_frame(outermost: CodeType | None = None) -> SourceLocation | None:
    """The innermost frame on the current stack that is neither torch's nor initlint's, looking
    no further out than a frame running ``outermost`` (e.g. the tracer's entry point, beyond
    which the frames are the caller's, not the model's)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code is not outermost:
        if is_user_file(frame.f_code.co_filename):
            return SourceLocation(frame.f_code.co_filename, frame.f_lineno)
        frame = frame.f_back
    return None


@contextlib.contextmanager
def recording_construction_sites() -> Iterator[dict[nn.Module, SourceLocation]]:
    """While active, remember the user's line that registered each submodule."""
    sites: dict[nn.Module, SourceLocation] = {}

    def hook(parent: nn.Module, name: str, submodule: nn.Module | None) -> None:
        if submodule is not None and submodule not in sites:
            site = innermost_user_frame()
            if site is not None:
                sites[submodule] = site

    handle = nn.modules.module.register_module_module_registration_hook(hook)
    try:
        yield sites
    finally:
        handle.remove()


def definition_of(obj: type | Callable) -> SourceLocation | None:
    """The file and first line of a class or function, when its source is known."""
    return _class_definition(obj) if isinstance(obj, type) else _definition(obj)


@functools.lru_cache(maxsize=None)
def _class_definition(cls: type) -> SourceLocation | None:
    """Cached: finding a class's source parses its whole file; once per class is enough."""
    return _definition(cls)


def _definition(obj: type | Callable) -> SourceLocation | None:
    try:
        file = inspect.getsourcefile(obj)
        _, line = inspect.getsourcelines(obj)
    except (OSError, TypeError):
        return None
    if file is None or not is_user_file(file):
        return None
    return SourceLocation(file, line)


def module_definition_sites(
    model: nn.Module, construction_sites: dict[nn.Module, SourceLocation]
) -> dict[str, SourceLocation]:
    """Map each qualified module path to where it was constructed, else its user class's source.

    A module without a site of its own inherits its parent's, so every path has the best
    location its ancestors can give.
    """
    sites: dict[str, SourceLocation] = {}
    for path, module in model.named_modules():
        parent = sites.get(path.rpartition(".")[0]) if path else None
        sites[path] = construction_sites.get(module) or definition_of(type(module)) or parent
    return {path: site for path, site in sites.items() if site is not None}

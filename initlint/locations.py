"""Where in the user's source a layer comes from, so findings point at a file and line.

Three sources, best first: the user's frame on the stack when torch.fx creates a node (where
the layer is *called*); the frame that registered the module while the factory ran
(where it is *defined*, e.g. the line of an ``nn.Sequential(...)``); the definition of the
nearest user-written module class or of the factory itself.

A line inside an installed library (``site-packages/torchvision/models/resnet.py:92``) is where
the layer runs, but not a line the user can change: the user's own line that reached it (the
factory's ``resnet18()``) leads, and the library's line follows as ``via``.
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

_TORCH_DIR, _INITLINT_DIR = (str(Path(p).resolve().parent) + os.sep for p in (torch.__file__, __file__))


def relative_to_cwd(path: str | os.PathLike) -> Path:
    """Relative to the working folder when inside it (as CI annotations want), else as given:
    findings, summaries and configured targets all name a file this one way."""
    file, here = Path(path), Path.cwd()
    return file.relative_to(here) if file.is_absolute() and file.is_relative_to(here) else file


_INSTALLED = frozenset({"site-packages", "dist-packages"})


@dataclass(frozen=True)
class SourceLocation:
    file: str
    line: int
    via: SourceLocation | None = None
    """The library line that the user's own line (``file``, ``line``) reached, if any."""

    def to_dict(self) -> dict:
        document: dict = {"file": self.file, "line": self.line}
        if self.via is not None:
            document["via"] = self.via.to_dict()
        return document

    @property
    def in_library(self) -> bool:
        """In an installed package: a line the user reads but does not own."""
        return not _INSTALLED.isdisjoint(Path(self.file).parts)

    def display(self) -> str:
        """``model.py:12``, or ``model.py:12 (via site-packages/torchvision/models/resnet.py:278)``:
        a library's path from its install folder on, which is what tells the library."""
        parts = Path(self.file).parts
        installed = [i for i, part in enumerate(parts) if part in _INSTALLED]
        path = Path(*parts[installed[-1]:]) if installed else self.display_path()
        own = f"{path}:{self.line}"
        return own if self.via is None else f"{own} (via {self.via.display()})"

    def display_path(self) -> Path:
        return relative_to_cwd(self.file)


@functools.lru_cache(maxsize=4096)
def is_user_file(filename: str) -> bool:
    """Neither torch's nor initlint's (cached: every traced node asks about the same files)."""
    if filename.startswith("<"):
        return False
    resolved = str(Path(filename).resolve())
    return not resolved.startswith((_TORCH_DIR, _INITLINT_DIR))


@functools.lru_cache(maxsize=4096)
def _is_initlint(filename: str) -> bool:
    return str(Path(filename).resolve()).startswith(_INITLINT_DIR)


def innermost_user_frame(outermost: CodeType | None = None) -> SourceLocation | None:
    """The innermost frame on the current stack that is neither torch's nor initlint's, looking
    no further out than a frame running ``outermost`` (e.g. the tracer's entry point, beyond
    which the frames are the caller's, not the model's). When that frame is in a library, the
    user's own frame that called into it leads (found before the stack leaves for initlint's
    own code, which called the model's code)."""
    frame = sys._getframe(1)
    library = None
    while frame is not None and frame.f_code is not outermost:
        filename = frame.f_code.co_filename
        if library is not None and _is_initlint(filename):
            break  # back in initlint: no frame of the user's own called the library
        if is_user_file(filename):
            site = SourceLocation(filename, frame.f_lineno)
            if not site.in_library:
                return with_own_line(library, site) if library is not None else site
            library = library or site
        frame = frame.f_back
    return library


def with_own_line(location: SourceLocation | None, *candidates: SourceLocation | None) -> SourceLocation | None:
    """``location``, led by the user's own line when it lies in a library: the first candidate
    outside libraries (e.g. where the user built the module), with ``location`` as ``via``."""
    if location is None or not location.in_library:
        return location
    own = next((c for c in candidates if c is not None and not c.in_library), None)
    return location if own is None else SourceLocation(own.file, own.line, via=location)


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

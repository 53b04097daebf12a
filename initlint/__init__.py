"""initlint: a linter for PyTorch models' initialization and signal propagation."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["CheckOptions", "InitlintError", "Report", "check", "fix", "renorm_constants", "__version__"]

if TYPE_CHECKING:
    from initlint.api import CheckOptions, check
    from initlint.errors import InitlintError
    from initlint.fixer import fix
    from initlint.moments import renorm_constants
    from initlint.report import Report

_LAZY = {
    "check": "initlint.api",
    "CheckOptions": "initlint.api",
    "Report": "initlint.report",
    "InitlintError": "initlint.errors",
    "fix": "initlint.fixer",
    "renorm_constants": "initlint.moments",
}


def __getattr__(name: str) -> object:
    """Import the engine (and torch) only when it is used, so ``initlint --help`` starts fast."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'initlint' has no attribute {name!r}")

"""File and folder names the operating system would refuse, caught before any work is done.

Python's ``Path.exists()`` raises "File name too long" instead of answering; checking each
name's length first turns that into a message that says which name and how long it may be.
"""

from __future__ import annotations

import os
from pathlib import Path

from initlint.errors import InitlintError

_DEFAULT_NAME_MAX = 255


def _name_max(folder: Path) -> int:
    """The longest name, in bytes, that the file system holding ``folder`` accepts."""
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return _DEFAULT_NAME_MAX


def checked_path(path: str | os.PathLike, role: str) -> Path:
    """``path`` as a Path when every part of it is a name the file system can hold; ``role``
    (\"the output file\", \"the model file\") says what it is in the message."""
    candidate = Path(path)
    limit = None
    for part in candidate.parts:
        size = len(os.fsencode(part))
        if size > _DEFAULT_NAME_MAX or (size > 64 and size > (limit := limit or _name_max(candidate.parent))):
            shown = part if len(part) <= 40 else f"{part[:20]}...{part[-10:]}"
            raise InitlintError(
                f"{role} {shown!r} has a name of {size} bytes, longer than this file system allows "
                f"({limit or _DEFAULT_NAME_MAX}); choose a shorter name."
            )
    return candidate

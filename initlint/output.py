"""Write outputs atomically and never over an existing file unless forced."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from initlint.errors import InitlintError


def refuse_existing(path: str | os.PathLike, force: bool) -> None:
    """Fail before any work is done when ``path`` exists and ``force`` was not given."""
    if Path(path).exists() and not force:
        raise InitlintError(f"{str(path)!r} already exists; pass --force to overwrite it.")


def write_text_atomically(path: str | os.PathLike, text: str, force: bool = False) -> None:
    """Write to a temporary file beside ``path``, then rename it into place in one step."""
    target = Path(path)
    refuse_existing(target, force)
    if not target.parent.is_dir():
        raise InitlintError(f"cannot write {str(target)!r}: folder {str(target.parent)!r} does not exist.")
    try:
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, target)
    except OSError as error:
        raise InitlintError(f"cannot write {str(target)!r}: {error.strerror or error}.") from error

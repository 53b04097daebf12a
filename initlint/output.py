"""Write outputs atomically and never over an existing file unless forced."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from initlint.errors import InitlintError


def refuse_existing(path: str | os.PathLike, force: bool) -> None:
    """Fail before any work is done when ``path`` exists and ``force`` was not given."""
    if Path(path).exists() and not force:
        raise InitlintError(f"{str(path)!r} already exists; pass --force to overwrite it.")


def _writable(path: str | os.PathLike, force: bool) -> Path:
    target = Path(path)
    refuse_existing(target, force)
    if not target.parent.is_dir():
        raise InitlintError(f"cannot write {str(target)!r}: folder {str(target.parent)!r} does not exist.")
    return target


def _permissions(base: int) -> int:
    """The mode a plain ``open``/``mkdir`` would give: temporary files are private (0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def write_bytes_atomically(path: str | os.PathLike, data: bytes, force: bool = False) -> None:
    """Write to a temporary file beside ``path``, then rename it into place in one step."""
    target = _writable(path, force)
    try:
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, _permissions(0o666))
        os.replace(temporary, target)
    except OSError as error:
        raise InitlintError(f"cannot write {str(target)!r}: {error.strerror or error}.") from error


def write_text_atomically(path: str | os.PathLike, text: str, force: bool = False) -> None:
    write_bytes_atomically(path, text.encode("utf-8"), force)


def write_folder_atomically(folder: str | os.PathLike, files: dict[str, object], force: bool) -> None:
    """Write ``files`` (name -> text, dict for JSON, or anything ``torch.save`` takes) into a
    temporary sibling folder, then rename it into place."""
    target = _writable(folder, force)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    staging.chmod(_permissions(0o777))
    try:
        for name, content in files.items():
            if isinstance(content, str):
                (staging / name).write_text(content)
            elif isinstance(content, dict) and name.endswith(".json"):
                (staging / name).write_text(json.dumps(content, indent=2) + "\n")
            else:
                torch.save(content, staging / name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise InitlintError(f"cannot write {str(target)!r}: {error.strerror or error}.") from error

"""Write outputs atomically and never over an existing file unless forced."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from initlint.errors import InitlintError
from initlint.interrupts import deferred
from initlint.names import checked_path


def _require_parent(target: Path) -> None:
    """Fail unless the folder ``target`` goes into is one."""
    if target.parent.is_dir():
        return
    problem = "is not a folder;" if target.parent.exists() else "does not exist; create it first, or"
    raise InitlintError(f"cannot write {str(target)!r}: {str(target.parent)!r} {problem} name an output in a "
                        "folder that exists.")


def refuse_existing(path: str | os.PathLike, force: bool) -> None:
    """Fail before any work is done when ``path`` exists and ``force`` was not given, or when
    its folder does not exist."""
    target = checked_path(path, "the output file")
    if target.exists() and not force:
        raise InitlintError(f"{str(path)!r} already exists; pass --force to overwrite it.")
    _require_parent(target)


def refuse_existing_folder(folder: str | os.PathLike, force: bool, ours: Callable[[Path], bool]) -> None:
    """Fail unless ``folder`` is new, or ``force`` is given and it is empty or ``ours`` recognises
    it as a folder that initlint itself wrote; and fail when the folder it would go into does
    not exist. The working folder and its parents are never replaced: ``--force`` must not be
    able to empty a project."""
    target = checked_path(folder, "the output folder")
    if not (target.exists() or target.is_symlink()):
        _require_parent(target)
        return
    resolved = target.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise InitlintError(
            f"{str(folder)!r} is the current folder or one above it, which initlint never replaces; "
            "name a new folder for the output, e.g. -o fixed_model."
        )
    if target.is_symlink() or not target.is_dir():
        raise InitlintError(
            f"{str(folder)!r} exists and is not a folder that initlint wrote; name a new folder for the output."
        )
    if not force:
        raise InitlintError(f"{str(folder)!r} already exists; pass --force to overwrite it.")
    if any(target.iterdir()) and not ours(target):
        raise InitlintError(
            f"{str(folder)!r} is not empty and was not written by initlint, so --force does not replace it "
            "(initlint only replaces its own output); name a new folder, or remove this one yourself."
        )


def _permissions(base: int) -> int:
    """The mode a plain ``open``/``mkdir`` would give: temporary files are private (0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


_written: list[str] = []


def written() -> list[str]:
    """The outputs this process has put in place, for a message after an interruption."""
    return list(_written)


def write_bytes_atomically(path: str | os.PathLike, data: bytes, force: bool = False) -> None:
    """Write to a temporary file beside ``path``, then rename it into place in one step. The
    temporary file is removed whatever happens, a signal included."""
    refuse_existing(path, force)
    target = Path(path)
    temporary = None
    try:
        with deferred():
            handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, _permissions(0o666))
        with deferred():
            os.replace(temporary, target)
            _written.append(str(target))
    except OSError as error:
        raise InitlintError(f"cannot write {str(target)!r}: {_reason(error)}.") from error
    finally:
        with deferred():
            if temporary is not None and os.path.lexists(temporary):
                os.unlink(temporary)


def write_text_atomically(path: str | os.PathLike, text: str, force: bool = False) -> None:
    write_bytes_atomically(path, text.encode("utf-8"), force)


def write_folder_atomically(
    folder: str | os.PathLike, files: dict[str, object], force: bool, ours: Callable[[Path], bool],
    verify: Callable[[Path], None] = lambda staging: None,
) -> None:
    """Write ``files`` (name -> text, dict for JSON, or anything ``torch.save`` takes) into a
    temporary sibling folder, ``verify`` it there (it raises to refuse it), then rename it into
    place. An existing folder is replaced only as ``refuse_existing_folder`` allows, and is
    moved aside until the new one is in place."""
    refuse_existing_folder(folder, force, ours)
    target = Path(folder)
    staging = replaced = None
    try:
        with deferred():
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
            replaced = staging.with_name(staging.name + ".old")
        staging.chmod(_permissions(0o777))
        for name, content in files.items():
            if isinstance(content, str):
                (staging / name).write_text(content, encoding="utf-8")
            elif isinstance(content, dict) and name.endswith(".json"):
                (staging / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
            else:
                torch.save(content, staging / name)
        verify(staging)
        with deferred():
            if target.exists():
                os.replace(target, replaced)
            os.replace(staging, target)
            _written.append(str(target))
    except OSError as error:
        with deferred():
            if replaced is not None and replaced.exists() and not target.exists():
                os.replace(replaced, target)
        raise InitlintError(f"cannot write {str(target)!r}: {_reason(error)}.") from error
    finally:
        with deferred():
            for leftover in filter(None, (staging, replaced)):
                shutil.rmtree(leftover, ignore_errors=True)


def _reason(error: OSError) -> str:
    """What the operating system said, with the mend for the usual cases."""
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{error.strerror}; choose a folder you can write to, or change its permissions"
    if error.errno == errno.ENAMETOOLONG:
        return f"{error.strerror}; choose a shorter file or folder name"
    return str(error.strerror or error)

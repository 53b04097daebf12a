"""User code that tries to end the process is bad input, not a result.

A model file that calls ``sys.exit(0)`` at import (a script ending in ``sys.exit(main())``
without a ``__main__`` guard), or a factory that raises ``SystemExit(1)``, would otherwise end
initlint with that status: 0 reads as "clean" in CI, 1 as "findings". ``exits_refused`` turns
``SystemExit`` and a ``KeyboardInterrupt`` raised by code (not by a signal) into an
``InitlintError`` that says what tried to exit and from which file and line.
"""

from __future__ import annotations

import contextlib
import sysconfig
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from initlint.errors import InitlintError
from initlint.interrupts import Interrupted

_OWN_FOLDER = str(Path(__file__).resolve().parent)
_LIBRARY_FOLDERS = tuple(
    str(Path(folder).resolve()) for folder in {sysconfig.get_paths()[key] for key in ("stdlib", "purelib", "platlib")}
)


def _where(trace: TracebackType | None) -> str:
    """The file and line that raised: the deepest frame of the user's own code, else of any
    library, never initlint's own or the import machinery's."""
    frames = [frame for frame in traceback.extract_tb(trace)
              if not frame.filename.startswith("<") and not frame.filename.startswith(_OWN_FOLDER)]
    own = [frame for frame in frames if not str(Path(frame.filename).resolve()).startswith(_LIBRARY_FOLDERS)]
    chosen = (own or frames or [None])[-1]
    return f"{chosen.filename}:{chosen.lineno}" if chosen is not None else "an unknown place"


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}({error.code!r})" if isinstance(error, SystemExit) else type(error).__name__


@contextlib.contextmanager
def exits_refused(what: str, mend: str) -> Iterator[None]:
    """Run user code; ``SystemExit`` or a code-raised ``KeyboardInterrupt`` becomes an
    ``InitlintError`` naming ``what`` tried to exit, from where, and ``mend``. A real signal
    (``Interrupted``) passes through."""
    try:
        yield
    except Interrupted:
        raise
    except (SystemExit, KeyboardInterrupt) as error:
        raise InitlintError(
            f"{what} tried to exit: it raised {_describe(error)} at {_where(error.__traceback__)}. "
            f"Nothing was checked or written; {mend}"
        ) from error


"""SIGINT and SIGTERM become one clean exception, raised where it cannot leave debris.

Without a handler, SIGTERM kills the process at once, so ``finally`` blocks never run and a
half-written output folder stays behind. While the CLI runs, both signals raise ``Interrupted``
(a ``KeyboardInterrupt``) so that cleanup runs and the CLI exits 2 with a message; inside
``deferred()`` (renaming an output into place, removing temporary files) a signal is held back
until the block ends, so the block is never cut in half.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A signal arrived: the user or the system asked initlint to stop."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


_depth = 0
"""How many ``deferred`` blocks are open."""
_pending: list[str] = []


def _handler(number: int, frame: FrameType | None) -> None:
    name = signal.Signals(number).name
    if _depth:
        _pending.append(name)
        return
    raise Interrupted(name)


@contextlib.contextmanager
def signals_handled() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM raise ``Interrupted``; the previous handlers
    come back afterwards. Only the main thread can install handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _handler) for number in HANDLED}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold back a signal until the block ends, then raise it (once the block's work is whole)."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending:
            name = _pending[0]
            _pending.clear()
            raise Interrupted(name)

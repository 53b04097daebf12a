"""Progress on stderr while a large model is traced and probed.

Silent by default: the Python API, small models, machine formats and a stderr that is not a
terminal never see a bar. The CLI asks for one; ``for_model`` decides whether it is worth it.
"""

from __future__ import annotations

import sys

import torch.nn as nn

LARGE_MODEL_MODULES = 100
"""Models with this many modules (a few hundred graph nodes) take seconds: show progress."""


class Progress:
    """The silent progress: every call does nothing."""

    def phase(self, label: str, total: int) -> None:
        """Start a stage of ``total`` steps (and finish the previous one)."""

    def advance(self) -> None:
        """One step of the current stage."""

    def done(self) -> None:
        """Finish the current stage."""


class TerminalProgress(Progress):
    """A click progress bar on stderr, one per stage."""

    def __init__(self) -> None:
        self._bar = None

    def phase(self, label: str, total: int) -> None:
        import click

        self.done()
        self._bar = click.progressbar(length=max(total, 1), label=f"initlint: {label:<8}", file=sys.stderr,
                                        show_eta=False)
        self._bar.render_progress()

    def advance(self) -> None:
        if self._bar is not None and self._bar.pos < self._bar.length:  # never past 100 %
            self._bar.update(1)

    def done(self) -> None:
        if self._bar is not None:
            self._bar.update(self._bar.length - self._bar.pos)
            self._bar.render_finish()
            self._bar = None


def for_model(model: nn.Module, wanted: bool) -> Progress:
    """A bar when one is ``wanted``, stderr is a terminal and the model is large."""
    large = sum(1 for _ in model.modules()) >= LARGE_MODEL_MODULES
    return TerminalProgress() if wanted and large and sys.stderr.isatty() else Progress()

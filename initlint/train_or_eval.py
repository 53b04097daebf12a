"""Run a model in training mode, or in eval mode when its training forward needs more than
inputs (detectors: "targets should not be none when in training mode").

Decided by behaviour, never by class: the train-mode attempt runs first; when it raises and an
eval-mode attempt succeeds, the eval result is used and a note says so. When both fail, the
train-mode error is the one reported (it is the one a first training step would meet).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch.nn as nn

from initlint.errors import InitlintError

T = TypeVar("T")


@contextlib.contextmanager
def in_mode(model: nn.Module, training: bool) -> Iterator[None]:
    """``model`` in training or eval mode, each submodule's own flag back afterwards (a model
    may hold some layers in eval mode on purpose). The model itself, not a copy: a layer with
    torch.nn.utils.weight_norm's hook cannot be deep-copied once it has run."""
    flags = {module: module.training for module in model.modules()}
    model.train(training)
    try:
        yield
    finally:
        for module, flag in flags.items():
            module.training = flag


def train_else_eval(
    attempt: Callable[[bool], T], what: str = "probed", consequence: str = "BatchNorm used its running statistics",
) -> tuple[T, str | None]:
    """``attempt(True)`` (train mode); if it raises, ``attempt(False)`` (eval mode) and a note
    that says what was done in eval mode and what that changes."""
    try:
        return attempt(True), None
    except InitlintError:
        raise
    except Exception as train_error:
        try:
            result = attempt(False)
        except Exception:
            raise train_error from None
        reason = (str(train_error).strip().splitlines() or [""])[0]
        return result, (f"{what} in eval mode: in train mode the forward raised "
                        f"{type(train_error).__name__}: {reason} ({consequence})")

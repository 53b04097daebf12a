"""Leave the user's model and random state exactly as they were, whatever the model's forward does.

A forward may update buffers (EMA statistics, step counters: ``self.steps += 1``), replace them
(``self.steps = self.steps + 1``), or draw random numbers in Python (``torch.rand``,
``random.random``). ``check`` and ``fix`` run that forward, so they snapshot every parameter,
buffer and random generator first and put each back afterwards, bit for bit, even when the run
fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class _Slot:
    """One tensor attribute of one module: the object that was there and a copy of its values."""

    module: nn.Module
    table: str
    """``_parameters`` or ``_buffers``."""
    name: str
    tensor: torch.Tensor | None
    saved: torch.Tensor | None

    def restore(self) -> None:
        """Put the object back, and its values where they changed: an unchanged constant may be
        an expanded view (an exported attention mask, stride 0 over the batch), which no write
        can go into."""
        getattr(self.module, self.table)[self.name] = self.tensor
        if self.tensor is not None and self.saved is not None and not torch.equal(self.tensor, self.saved):
            with torch.no_grad():
                self.tensor.copy_(self.saved)


def _slots(model: nn.Module, tables: tuple[str, ...] = ("_parameters", "_buffers")) -> list[_Slot]:
    slots = []
    for module in model.modules():
        for table in tables:
            for name, tensor in getattr(module, table).items():
                saved = None if tensor is None or tensor.is_meta else tensor.detach().clone()
                slots.append(_Slot(module, table, name, tensor, saved))
    return slots


def _numpy_random() -> object | None:
    """numpy's global generator when numpy is importable (a model may draw from it)."""
    numpy = sys.modules.get("numpy")
    if numpy is None:
        try:
            import numpy
        except ImportError:
            return None
    return numpy.random


@contextlib.contextmanager
def random_state_preserved() -> Iterator[None]:
    """Restore torch's CPU and CUDA generators, Python's ``random`` and numpy's on the way out."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    python = random.getstate()
    numpy_random = _numpy_random()
    numpy_state = numpy_random.get_state() if numpy_random is not None else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        random.setstate(python)
        if numpy_random is not None:
            numpy_random.set_state(numpy_state)


@contextlib.contextmanager
def model_preserved(model: object) -> Iterator[None]:
    """Restore every parameter and buffer of ``model`` (the same objects, the same values) and
    every random generator when the block ends. Costs one copy of the model's tensors."""
    slots = _slots(model) if isinstance(model, nn.Module) else []
    with random_state_preserved():
        try:
            yield
        finally:
            for slot in slots:
                slot.restore()


@contextlib.contextmanager
def buffers_preserved(model: nn.Module) -> Iterator[None]:
    """Restore every buffer of ``model`` when the block ends: a module that a trace keeps whole
    and that holds a BatchNorm (timm's MobileViT block) folds each probe's batch into its running
    statistics, which the fixed model written from the trace would carry. Restored after the
    block, not after each call: autograd may hold the buffer for the backward pass."""
    slots = _slots(model, ("_buffers",))
    try:
        yield
    finally:
        for slot in slots:
            slot.restore()

"""The memory budget: a probe that would not fit stops with a clear message, before the OS kills it."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import initlint
import initlint.memory
from initlint.errors import InitlintError
from initlint.inputs import InputSpec
from initlint.memory import PROBE_FACTOR, MemoryBudget, available_bytes


def budget_of(free: int) -> MemoryBudget:
    budget = MemoryBudget(torch.device("cpu"))
    budget.free = free
    return budget


def test_inputs_are_checked_before_they_are_drawn():
    budget = budget_of(10**9)
    with pytest.raises(InitlintError, match=r"\(1000000000000, 16\)"):
        budget.check_inputs([InputSpec("x", (10**12, 16))], torch.float32)  # 64 TB
    assert budget.held == 0  # checked, not charged: the forward pass charges what it measures


def test_values_are_charged_as_the_forward_pass_makes_them():
    budget = budget_of(int(PROBE_FACTOR * 1000 * 4))  # room for 1000 float32 values
    budget.charge(torch.zeros(600))
    assert budget.held == 2400
    with pytest.raises(InitlintError, match="stopped before exhausting it"):
        budget.charge(torch.zeros(600))


def test_a_probe_that_outgrows_free_memory_stops_with_advice(monkeypatch):
    """Inputs of 8 x 16 fit, but a 16 -> 100000 layer's output (3.2 MB) does not fit in 1 MB."""
    monkeypatch.setattr(initlint.memory, "available_bytes", lambda device: 10**6)
    model = nn.Sequential(nn.Linear(16, 100_000), nn.ReLU())
    with pytest.raises(InitlintError, match=r"--input-shape"):
        initlint.check(model)


def test_this_machine_reports_its_free_memory():
    free = available_bytes(torch.device("cpu"))
    assert free is not None and free > 0

"""``check`` and ``fix`` leave the model bit-identical (parameters and buffers, the same objects)
and every random generator where it was, whatever the model's forward does."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

import initlint


class Normalized(nn.Module):
    """Normalizes its input with buffers, as image models do: ``(x - mean) / std``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((8,), 0.5))
        self.register_buffer("std", torch.full((8,), 2.0))
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin((x - self.mean) / self.std))


class BuffersOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.weight) @ self.weight


class Stateful(nn.Module):
    """Updates EMA buffers in place and by reassignment, and draws random numbers in Python."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.register_buffer("running", torch.zeros(8))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.lin(x))
        self.running.mul_(0.9).add_(y.mean(0).detach(), alpha=0.1)
        self.steps += 1
        with torch.no_grad():
            self.lin.weight.data.mul_(1.0001)
        return y + 0.01 * torch.rand(8) + random.random() + float(np.random.rand())


def _state(model: nn.Module) -> dict[str, tuple[int, torch.Tensor]]:
    return {name: (id(t), t.detach().clone()) for name, t in [*model.named_parameters(), *model.named_buffers()]}


def _random_state() -> tuple:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()


def _assert_same(before, after) -> None:
    assert before.keys() == after.keys()
    for name, (identity, value) in before.items():
        assert after[name][0] == identity, f"{name} was replaced"
        assert torch.equal(after[name][1], value), f"{name} changed"


@pytest.mark.parametrize("build", [Normalized, BuffersOnly, Stateful])
@pytest.mark.parametrize("run", [initlint.check, initlint.fix], ids=["check", "fix"])
def test_model_and_random_state_are_unchanged(build, run):
    torch.manual_seed(0)
    model = build()
    before, generators = _state(model), _random_state()
    run(model, input_shapes=[(8, 8)])
    _assert_same(before, _state(model))
    now = _random_state()
    assert torch.equal(now[0], generators[0]) and now[1] == generators[1] and (now[2] == generators[2]).all()


@pytest.mark.parametrize("run", [initlint.check, initlint.fix], ids=["check", "fix"])
def test_a_model_with_normalization_buffers_is_probed_with_its_shape_inferred_through_them(run):
    run(Normalized())  # the Linear after (x - mean) / std gives the shape; no "`mean` is not an nn.Parameter"
    report = initlint.check(Normalized())
    assert [spec.shape for spec in report.inputs] == [(8, 8)]


def test_an_expanded_constant_buffer_is_left_as_it_is():
    """torch.export lifts an attention mask expanded over the batch (stride 0) into a buffer: no
    write can go into it, and since it does not change, restoring it writes nothing. A buffer the
    run changed is still put back."""
    from initlint.preserve import buffers_preserved

    model = nn.Module()
    model.register_buffer("mask", torch.zeros(1, 4).expand(3, 4))
    model.register_buffer("counter", torch.zeros(2))
    with buffers_preserved(model):
        model.counter.add_(1)
    assert model.mask.stride() == (0, 1) and torch.equal(model.counter, torch.zeros(2))

"""Builders shared by the rules' example models (kept tiny so the test suite runs them all)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn


def mlp(
    depth: int,
    width: int,
    activation: Callable[[], nn.Module],
    init: Callable[[nn.Linear], None] | None = None,
    seed: int = 0,
) -> nn.Sequential:
    """``depth`` blocks of Linear(width, width) -> activation; ``init`` re-initializes each Linear."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(depth):
        linear = nn.Linear(width, width)
        if init is not None:
            init(linear)
        layers += [linear, activation()]
    return nn.Sequential(*layers)


def gain_init(gain: float) -> Callable[[nn.Linear], None]:
    """Xavier-normal weights with ``gain`` and zero bias (square layers: std = gain / sqrt(fan_in))."""
    def init(linear: nn.Linear) -> None:
        nn.init.xavier_normal_(linear.weight, gain=gain)
        nn.init.zeros_(linear.bias)
    return init


class ResidualMLPBlock(nn.Module):
    """``x + scale * branch(x)``: the branch is Linear -> ReLU -> Linear with Kaiming (fan-in,
    ReLU gain) weights and zero biases, ending in another ReLU when ``relu_last``; its last
    Linear starts at zero when ``zero_last``."""

    def __init__(self, width: int, scale: float = 1.0, relu_last: bool = False, zero_last: bool = False) -> None:
        super().__init__()
        self.inner, self.outer = nn.Linear(width, width), nn.Linear(width, width)
        for linear in (self.inner, self.outer):
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
            nn.init.zeros_(linear.bias)
        if zero_last:
            nn.init.zeros_(self.outer.weight)
        self.scale, self.relu_last = scale, relu_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.outer(torch.relu(self.inner(x)))
        return x + self.scale * (torch.relu(branch) if self.relu_last else branch)

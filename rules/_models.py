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

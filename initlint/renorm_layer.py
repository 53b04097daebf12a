"""The classes ``initlint fix``'s generated code imports (or copies): the module a renorm node
calls, and the base of the stochastic layers it writes out."""

from __future__ import annotations

import torch
import torch.nn as nn


class RenormLayer(nn.Module):
    """y = scale * x + bias, with constants fixed at fix time (buffers, not parameters)."""

    def __init__(self, scale: float, bias: float) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("bias", torch.tensor(float(bias)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.bias


class StochasticLayer(nn.Module):
    """Base of the classes generated code writes for stochastic depth or dropout that a model
    wrote itself (its operators, captured in training mode): a subclass returns its input in
    eval mode, and initlint keeps it whole and off in the probe, as it does ``nn.Dropout``.
    Written as plain operators, its random numbers, drawn at a size fx reads as a constant,
    became a fixed mask when ``initlint check DIR`` traced it: a different one on every check."""

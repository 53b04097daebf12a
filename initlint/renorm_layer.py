"""The module a renorm node calls; ``initlint fix``'s generated code imports it (or copies it)."""

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

"""A healthy model: a ReLU MLP with Kaiming init, which initlint passes.

    initlint check examples/healthy_mlp.py:build
"""

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, width: int = 256, depth: int = 8, inputs: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(inputs, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.head = nn.Linear(width, classes)
        for layer in [self.embed, *self.hidden]:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for layer in self.hidden:
            x = layer(torch.relu(x))
        return self.head(torch.relu(x))


def build() -> nn.Module:
    torch.manual_seed(0)
    return MLP()

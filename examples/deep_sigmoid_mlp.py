"""A 20-layer sigmoid MLP with PyTorch's default init: the signal dies on the way to the output.

    initlint check examples/deep_sigmoid_mlp.py:build
"""

import torch
from torch import nn


def build() -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(64, 128), nn.Sigmoid()]
    for _ in range(19):
        layers += [nn.Linear(128, 128), nn.Sigmoid()]
    layers.append(nn.Linear(128, 10))
    return nn.Sequential(*layers)

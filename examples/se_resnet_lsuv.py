"""A small residual CNN with squeeze-excitation gates whose init was "polished" by an LSUV loop.

LSUV (Mishkin & Matas, 2015) rescales each layer until the activation after it has std 1, and
popular variants also shift the bias until its mean is 0. A sigmoid gate can reach neither, so
the loop runs until its iteration cap and leaves the gates pinned at 0 or 1:

    initlint check examples/se_resnet_lsuv.py:build
    initlint check examples/se_resnet_lsuv.py:build_untouched   # the same net before LSUV
"""

import torch
from torch import nn


class SEGate(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed))))


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.se = SEGate(channels, channels // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return torch.relu(x + out)


class SEResNet(nn.Module):
    def __init__(self, channels: int = 32, blocks: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU())
        self.blocks = nn.Sequential(*[Block(channels) for _ in range(blocks)])
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(self.stem(x))
        return self.head(features.mean((2, 3)))


@torch.no_grad()
def lsuv(model: nn.Module, batch: torch.Tensor, max_iterations: int = 8, tolerance: float = 0.01) -> None:
    """Data-driven init: scale every conv/linear until the activation after it has mean 0, std 1."""
    for layer in [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]:
        captured = {}

        def record(module, inputs, output):
            captured["out"] = output

        # the value LSUV looks at is the nonlinearity's output: for the gate, sigmoid(fc2(...))
        is_gate = any(layer is se.fc2 for se in model.modules() if isinstance(se, SEGate))
        handle = layer.register_forward_hook(record)
        for _ in range(max_iterations):
            model(batch)
            out = torch.sigmoid(captured["out"]) if is_gate else captured["out"]
            if abs(out.std().item() - 1) < tolerance and abs(out.mean().item()) < tolerance:
                break
            if layer.bias is not None:
                layer.bias -= out.mean()
            layer.weight /= out.std()
        handle.remove()


def build_untouched() -> nn.Module:
    torch.manual_seed(0)
    return SEResNet()


def build() -> nn.Module:
    model = build_untouched()
    lsuv(model, torch.randn(16, 3, 32, 32))
    return model

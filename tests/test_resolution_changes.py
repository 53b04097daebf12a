"""Rules compare like with like where a network changes resolution: summary pools are info,
pools inside the body warn, and an input reshaped before its first layer is still the input."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from initlint.rules.pooling_shrinkage import eight_by_eight_pool_in_body, global_pool_head

import initlint
from initlint.graph import INPUT


def _il301(model: nn.Module, shape: tuple[int, ...]) -> list[str]:
    return [f.severity for f in initlint.check(model, input_shapes=[shape], select=["IL301"]).findings]


def test_a_global_pool_into_the_head_is_info_and_a_body_pool_a_warning():
    assert _il301(global_pool_head(), (8, 3, 16, 16)) == ["info"]
    assert "warning" in _il301(eight_by_eight_pool_in_body(), (8, 3, 32, 32))


class PoolingBranch(nn.Module):
    """DeepLab's ASPP image pool: a global pool, a 1x1 conv, then broadcast back over the map."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 16, 1), nn.ReLU())
        self.project = nn.Conv2d(32, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(x))
        pooled = F.interpolate(self.image_pool(features), size=features.shape[-2:], mode="bilinear")
        return self.project(torch.cat([features, pooled], dim=1))


class AdaptivePoolHead(nn.Module):
    """VGG's classifier: an adaptive pool to 2x2 (not global), flattened into Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def test_a_pooling_branch_and_an_adaptive_pool_into_linear_layers_are_info():
    # white inputs shrink 16x over 256 positions and 8x over 64: far past min_std_ratio 0.25
    assert _il301(PoolingBranch(), (8, 3, 16, 16)) == ["info"]
    assert _il301(AdaptivePoolHead(), (8, 3, 16, 16)) == ["info"]


class StridedAudio(nn.Module):
    """wav2vec2's feature encoder in small: raw audio as (batch, samples), given a channel dim
    (``x[:, None]``) before a Conv1d from 1 to 64 channels, then convs of stride 2."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.convs = nn.ModuleList(
            [nn.Conv1d(1, 64, 10, stride=5)] + [nn.Conv1d(64, 64, 3, stride=2) for _ in range(4)]
        )
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None]
        for conv in self.convs:
            x = F.gelu(conv(x))
        return x


def test_an_input_given_a_channel_dim_is_still_the_input():
    """The 1 -> 64 conv reads the input: its fan ratio (sqrt 64 = 8, past IL502's 4.8) belongs
    to the input layer, which IL502 leaves out, and the reshaped audio trains nothing (IL501)."""
    report = initlint.check(StridedAudio(), input_shapes=[(8, 4000)], select=["IL501", "IL502"])
    (reshaped,) = [v for v in report.graph.nodes.values() if v.kind.name == "getitem"]
    assert INPUT in reshaped.roles
    assert report.findings == [], [f.message for f in report.findings]

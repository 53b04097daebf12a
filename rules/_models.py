"""Builders shared by the rules' example models (kept tiny so the test suite runs them all)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


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


def kaiming_conv_stack(downsample: str, widths: tuple[int, ...] = (16, 16, 32, 32, 64, 64)) -> nn.Sequential:
    """Conv3x3 -> ReLU layers with Kaiming (fan-in, ReLU gain) weights and zero biases, halving
    the resolution between every two layers, then a global average pool into a 10-way head.
    ``downsample`` is ``"max_pool"`` (a 2x2 max pool) or ``"stride"`` (the next conv has
    stride 2): the textbook plain CNNs, whose per-element gradient halves at every halving."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    channels = 3
    for index, width in enumerate(widths):
        stride = 2 if downsample == "stride" and index > 0 else 1
        conv = nn.Conv2d(channels, width, 3, stride=stride, padding=1)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU()]
        if downsample == "max_pool" and index < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


def max_pool_cnn() -> nn.Sequential:
    """Six Kaiming Conv3x3 -> ReLU layers with a 2x2 max pool between each two (64x64 -> 2x2):
    each pool sends a gradient to 1 of its 4 inputs, so the per-element gradient halves five
    times while the per-sample norm (and the weights' gradients) stay flat."""
    return kaiming_conv_stack("max_pool")


def strided_cnn() -> nn.Sequential:
    """The same six layers halving the resolution with stride-2 convs instead of pools."""
    return kaiming_conv_stack("stride")


ATTENTION_VOCAB, ATTENTION_WIDTH, ATTENTION_HEADS = 1000, 128, 8
"""The attention examples' vocabulary, d_model and heads: "Attention is all you need" sizes, scaled down."""


class SelfAttention(nn.Module):
    """One head-split self-attention, computed ``how``: "function" calls
    ``F.scaled_dot_product_attention``, "written_out" is ``softmax(q @ k^T / sqrt(d)) @ v``,
    "module" is an ``nn.MultiheadAttention`` (a layer, kept whole by fx)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        width = ATTENTION_WIDTH
        self.how = how
        if how == "module":
            self.attention = nn.MultiheadAttention(width, ATTENTION_HEADS, batch_first=True)
        else:
            self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "module":
            return self.attention(x, x, x, need_weights=False)[0]
        batch, tokens, _ = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, ATTENTION_HEADS, -1).permute(2, 0, 3, 1, 4)
        if self.how == "written_out":
            y = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(batch, tokens, ATTENTION_WIDTH))


class TokenEncoder(nn.Module):
    """Token ids into an embedding times sqrt(d_model), as "Attention is all you need" code
    scales it, then (after an optional LayerNorm) one post-LayerNorm self-attention block: an
    ``nn.TransformerEncoderLayer`` (``attention=None``) or ``SelfAttention``, and a head."""

    def __init__(self, table_std: float = 1.0, norm_first: bool = False, attention: nn.Module | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(ATTENTION_VOCAB, ATTENTION_WIDTH)
        nn.init.normal_(self.embed.weight, std=table_std)
        self.norm = nn.LayerNorm(ATTENTION_WIDTH) if norm_first else nn.Identity()
        self.attention = attention
        self.block = nn.LayerNorm(ATTENTION_WIDTH) if attention is not None else \
            nn.TransformerEncoderLayer(ATTENTION_WIDTH, ATTENTION_HEADS, 4 * ATTENTION_WIDTH, batch_first=True)
        self.head = nn.Linear(ATTENTION_WIDTH, ATTENTION_VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.embed(ids) * math.sqrt(ATTENTION_WIDTH))
        x = self.block(x) if self.attention is None else self.block(x + self.attention(x))
        return self.head(x)


class PatchEncoder(nn.Module):
    """A ViT as Hugging Face initializes one (every weight N(0, 0.02)): 4x4 patches of a 3-channel
    image (a fan-in of 48, so the patch embedding's output has std 0.02 * sqrt(48) = 0.14), a
    class token concatenated before them, learned positions, one pre-LayerNorm attention block,
    a final LayerNorm and a head on the class token. With ``kept`` patches of the 16, it keeps
    only those (a fixed choice, gathered, as a masked autoencoder's encoder does)."""

    def __init__(self, width: int = 64, heads: int = 4, kept: int | None = None) -> None:
        super().__init__()
        self.register_buffer("kept", None if kept is None else torch.randperm(16)[:kept].reshape(1, kept, 1))
        self.patches = nn.Conv2d(3, width, 4, stride=4)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        self.positions = nn.Parameter(torch.zeros(1, (kept or 16) + 1, width))
        self.norm, self.final_norm = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.head = nn.Linear(width, 10)
        for parameter in (self.patches.weight, self.positions, self.head.weight):
            nn.init.normal_(parameter, std=0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patches(images).flatten(2).transpose(1, 2)
        if self.kept is not None:
            x = x.gather(1, self.kept.expand(len(x), -1, x.shape[-1]))
        x = torch.cat([self.class_token.expand(len(x), -1, -1), x], dim=1) + self.positions
        y = self.norm(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        return self.head(self.final_norm(x)[:, 0])

"""The architectures of ``train_digits.py`` and the baseline initializations it compares.

Every model takes the standardized 8x8 digits in the shape it wants (``Row.input_shape``: a flat
64-vector for the MLPs, a 1x8x8 image for the CNNs, 8 rows of 8 pixels for the transformer)
and says, through ``gains()``, which nonlinearity follows each of its weighted layers
("linear" where none does); the Kaiming/Xavier baseline reads that.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

Weighted = nn.Linear | nn.Conv2d

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "selu": nn.SELU,
}
MORE_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU, "elu": nn.ELU, "mish": nn.Mish, "leaky_relu": nn.LeakyReLU, "softplus": nn.Softplus,
    "hardswish": nn.Hardswish, "prelu": nn.PReLU,
}
"""Activations beyond issue 12's rows: does what holds for its five hold for others?"""
EVERY_ACTIVATION = {**ACTIVATIONS, **MORE_ACTIVATIONS}
GAIN_NAMES = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu", "gelu": "relu", "selu": "selu",
              "leaky_relu": "leaky_relu", "prelu": "leaky_relu", "linear": "linear", **dict.fromkeys(("silu", "elu", "mish", "softplus",
                                                                                "hardswish"), "relu")}
"""calculate_gain has no entry for GELU, SiLU, ELU, Mish, softplus or hardswish; ReLU's is the usual
stand-in."""
NEGATIVE_SLOPES = {"leaky_relu": 0.01, "prelu": 0.25}
"""The negative slope Kaiming's gain takes for a leaky activation: nn.LeakyReLU's default, and
nn.PReLU's initial one."""


class MLP(nn.Module):
    """Linear -> activation, ``depth`` times (width 128), then a Linear head."""

    def __init__(self, activation: str, depth: int, width: int = 128) -> None:
        super().__init__()
        self.activation = activation
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(64 if i == 0 else width, width), EVERY_ACTIVATION[activation]()]
        self.body = nn.Sequential(*layers, nn.Linear(width, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def gains(self) -> Iterator[tuple[Weighted, str]]:
        *hidden, head = [m for m in self.body if isinstance(m, nn.Linear)]
        yield from ((layer, self.activation) for layer in hidden)
        yield head, "linear"


class PlainCNN(nn.Module):
    """``depth`` 3x3 convs (padding 1, width 16) with an activation after each, no
    normalization, then a global average pool and a Linear head."""

    def __init__(self, activation: str, depth: int = 16, width: int = 16) -> None:
        super().__init__()
        self.activation = activation
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Conv2d(1 if i == 0 else width, width, 3, padding=1), EVERY_ACTIVATION[activation]()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))

    def gains(self) -> Iterator[tuple[Weighted, str]]:
        yield from ((m, self.activation) for m in self.body if isinstance(m, nn.Conv2d))
        yield self.head, "linear"


class ResidualBlock(nn.Module):
    """``x + conv2(relu(conv1(x)))``, no normalization."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class ResidualCNN(nn.Module):
    """A 3x3 stem conv, ``blocks`` residual blocks (width 16, no normalization), a global
    average pool and a Linear head."""

    def __init__(self, blocks: int = 24, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))

    def gains(self) -> Iterator[tuple[Weighted, str]]:
        yield self.stem, "linear"
        for block in self.blocks:
            yield block.conv1, "relu"
            yield block.conv2, "linear"
        yield self.head, "linear"


class Attention(nn.Module):
    """Multi-head self-attention written out (qkv Linear, softmax(q k^T / sqrt(d)) v, projection)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dim // self.heads), dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim))


class PreLNBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class RowTransformer(nn.Module):
    """A pre-LN transformer over the image's 8 rows (tokens of 8 pixels): a Linear embedding
    and a learned position embedding (width 32), ``depth`` blocks (4 heads, GELU MLP of 128),
    a final LayerNorm, the mean over tokens and a Linear head."""

    def __init__(self, depth: int = 6, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.position = nn.Parameter(torch.randn(8, dim) * 0.02)
        self.blocks = nn.Sequential(*[PreLNBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(x) + self.position)).mean(1))

    def gains(self) -> Iterator[tuple[Weighted, str]]:
        yield self.embed, "linear"
        for block in self.blocks:
            yield from ((block.attention.qkv, "linear"), (block.attention.proj, "linear"),
                        (block.fc1, "gelu"), (block.fc2, "linear"))
        yield self.head, "linear"


class SqueezeExcite(nn.Module):
    """x * sigmoid(expand(relu(reduce(mean of x over positions)))), as in SENet."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // reduction, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(channels // reduction, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True)))))


class SECNN(nn.Module):
    """``depth`` stages of 3x3 conv (width 32, no normalization) -> ReLU -> squeeze-excitation,
    a global average pool and a Linear head."""

    def __init__(self, depth: int = 4, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Conv2d(1 if i == 0 else width, width, 3, padding=1), nn.ReLU(), SqueezeExcite(width)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))

    def gains(self) -> Iterator[tuple[Weighted, str]]:
        for module in self.body:
            if isinstance(module, nn.Conv2d):
                yield module, "relu"
            elif isinstance(module, SqueezeExcite):
                yield from ((module.reduce, "relu"), (module.expand, "sigmoid"))
        yield self.head, "linear"


@torch.no_grad()
def lsuv_degenerate(model: SECNN, batch: torch.Tensor, iterations: int = 10) -> SECNN:
    """A capped LSUV-style loop (mean 0, std 1 asked of what follows each layer) that leaves
    the SE gates pinned: for every conv of the body, the conv's output is rescaled to std 1
    (LSUV proper); for each SE layer, the activation after it (the ReLU, the sigmoid gate) is
    asked for mean 0 and std 1 through the layer's bias and weight, as the loop in
    ``initlint.rules.degenerate_gate`` does. A sigmoid can reach neither, so the expand layer's
    weights grow and its bias falls until the iteration cap: most gates sit at 0 or 1."""
    targets: list[tuple[Weighted, nn.Module | None]] = []
    for module in model.body:
        if isinstance(module, nn.Conv2d):
            targets.append((module, None))
        elif isinstance(module, SqueezeExcite):
            targets += [(module.reduce, module.act), (module.expand, module.gate)]
    for layer, activation in targets:
        for _ in range(iterations):
            seen: list[torch.Tensor] = []
            handle = (activation or layer).register_forward_hook(lambda m, i, o: seen.append(o))
            model(batch)
            handle.remove()
            out = seen[0]
            if not out.std() > 0:  # a dead ReLU: LSUV implementations stop there
                break
            if activation is not None:
                layer.bias -= out.mean()
            layer.weight /= out.std()
    return model


@dataclass(frozen=True)
class Row:
    """One row of the table: how to build the model, the input shape of one sample, epochs."""

    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    epochs: int
    degenerate: bool = False
    """Start every init from the model after ``lsuv_degenerate`` (the SE-CNN row)."""
    fixup: bool = False
    """Fixup applies (a residual net)."""


def _mlp(activation: str) -> Callable[[], nn.Module]:
    return lambda: MLP(activation, 30)


def _cnn(activation: str) -> Callable[[], nn.Module]:
    return lambda: PlainCNN(activation, 16)


ROWS: dict[str, Row] = {
    **{f"{name} x30": Row(_mlp(name), (64,), 15) for name in ACTIVATIONS},
    "cnn relu x16": Row(_cnn("relu"), (1, 8, 8), 10),
    "cnn tanh x16": Row(_cnn("tanh"), (1, 8, 8), 10),
    "resnet x24": Row(lambda: ResidualCNN(24), (1, 8, 8), 10, fixup=True),
    "transformer x6": Row(lambda: RowTransformer(6), (8, 8), 15),
    "se-cnn (lsuv-degenerate)": Row(lambda: SECNN(4), (1, 8, 8), 10, degenerate=True),
}
"""Issue 12's rows: the default grid."""
MORE_ROWS: dict[str, Row] = {
    **{f"{name} x30": Row(_mlp(name), (64,), 15) for name in MORE_ACTIVATIONS},
    **{f"cnn {name} x16": Row(_cnn(name), (1, 8, 8), 10) for name in ("gelu", "silu")},
    **{f"{name} x30 width 256": Row(lambda name=name: MLP(name, 30, 256), (64,), 15) for name in ("tanh", "relu")},
    **{f"{name} x50": Row(lambda name=name: MLP(name, 50), (64,), 15) for name in ("tanh", "relu")},
}
"""Beyond issue 12's five activations, and its stacks made wider or deeper: does what holds for
its rows hold for others?"""
"""MLPs and plain CNNs of other activations, trained only when asked for (``--rows "silu x30" ...``)."""
EVERY_ROW = {**ROWS, **MORE_ROWS}


def with_gain(model: nn.Module) -> nn.Module:
    """Kaiming (fan in) before ReLU-like activations, Xavier with ``calculate_gain`` elsewhere;
    zero biases."""
    for layer, activation in model.gains():
        name = GAIN_NAMES[activation]
        if name in ("relu", "leaky_relu"):
            nn.init.kaiming_normal_(layer.weight, a=NEGATIVE_SLOPES.get(activation, 0), nonlinearity=name)
        else:
            nn.init.xavier_normal_(layer.weight, gain=nn.init.calculate_gain(name))
        nn.init.zeros_(layer.bias)
    return model


def with_lsuv(model: nn.Module, batch: torch.Tensor) -> nn.Module:
    """The ``lsuv`` package: orthonormal weights, then each Linear/Conv's output to std 1."""
    import lsuv

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints every step
        return lsuv.lsuv_with_singlebatch(model, batch, verbose=False)


@torch.no_grad()
def with_fixup(model: ResidualCNN) -> ResidualCNN:
    """Fixup (Zhang et al. 2019) without its scalar biases and multipliers: each branch's first
    conv He-initialized and scaled by L^(-1/(2m-2)) = L^(-1/2) (L blocks, m = 2 layers a
    branch), each branch's last conv and the head zero; the stem He-initialized (it feeds the
    stream, no activation: gain 1); all biases zero."""
    blocks = len(model.blocks)
    nn.init.kaiming_normal_(model.stem.weight, nonlinearity="linear")
    for block in model.blocks:
        nn.init.kaiming_normal_(block.conv1.weight, nonlinearity="relu")
        block.conv1.weight *= blocks ** (-1 / (2 * 2 - 2))
        nn.init.zeros_(block.conv2.weight)
    nn.init.zeros_(model.head.weight)
    for module in model.modules():
        if isinstance(module, Weighted) and module.bias is not None:
            nn.init.zeros_(module.bias)
    return model

"""Exact moments of an elementwise activation under N(0, 1) inputs, and its renorm constants.

``scale * f(x) + bias`` has mean 0 and std 1 for x ~ N(0, 1) when ``scale = 1 / std(f(x))`` and
``bias = -mean(f(x)) / std(f(x))``. The moments come from composite Simpson quadrature of
``f(x) * pdf(x)`` on a dense float64 grid over [-12, 12] (the Gaussian tail beyond is < 1e-32),
computed by calling the module itself, so custom activations work. Deterministic, unlike Monte
Carlo: relu gives 1.712859 / -0.683332 to every digit, every time.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from initlint.errors import InitlintError

_GRID_HALF_WIDTH = 12.0
_GRID_POINTS = 2**20 + 1  # odd, as Simpson's rule needs; spacing 2.3e-5

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "celu": nn.CELU,
    "selu": nn.SELU, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": nn.SiLU, "swish": nn.SiLU, "mish": nn.Mish, "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "hardtanh": nn.Hardtanh, "hardsigmoid": nn.Hardsigmoid,
    "hardswish": nn.Hardswish, "softsign": nn.Softsign, "identity": nn.Identity,
}


@dataclass(frozen=True)
class Moments:
    mean: float
    std: float

    @property
    def scale(self) -> float:
        return 1.0 / self.std

    @property
    def bias(self) -> float:
        return -self.mean / self.std


def activation_module(activation: str | nn.Module) -> nn.Module:
    """A module from a name (``"gelu"``) or the module itself."""
    if isinstance(activation, nn.Module):
        return activation
    key = activation.strip().lower().replace("-", "_")
    if key not in ACTIVATIONS:
        raise InitlintError(
            f"unknown activation {activation!r}; known names: {', '.join(sorted(ACTIVATIONS))}, "
            "or pass an nn.Module instance from Python."
        )
    return ACTIVATIONS[key]()


def in_float64(module: nn.Module) -> nn.Module:
    """``module`` (a copy, where it holds tensors) computing in float64, as the exact grids do."""
    tensors = [*module.parameters(), *module.buffers()]
    return copy.deepcopy(module).double() if tensors else module


def is_elementwise(module: nn.Module) -> bool:
    """True when the module maps each entry on its own: same shape, and reshaping or
    permuting the input reshapes or permutes the output the same way."""
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    permutation = torch.randperm(48, generator=torch.Generator().manual_seed(1))
    try:
        module = in_float64(module)  # a PReLU's float32 slope takes no float64 input
        with torch.no_grad():
            y = module(x)
            flat = module(x.reshape(-1))
            permuted = module(x.reshape(-1)[permutation])
    except Exception:
        return False
    if not (isinstance(y, torch.Tensor) and y.shape == x.shape and flat.shape == (48,)):
        return False
    return torch.allclose(y.reshape(-1), flat) and torch.allclose(flat[permutation], permuted)


@functools.cache
def gaussian_grid(points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points over [-12, 12] (``points`` odd) and their composite Simpson weights times the
    N(0, 1) density: ``(weights * f(x)).sum()`` is E[f(z)] in float64. Built once per size."""
    x = torch.linspace(-_GRID_HALF_WIDTH, _GRID_HALF_WIDTH, points, dtype=torch.float64)
    weights = torch.full_like(x, 2.0)
    weights[1::2] = 4.0
    weights[0] = weights[-1] = 1.0
    step = 2 * _GRID_HALF_WIDTH / (points - 1)
    return x, weights * step / 3 * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)


_cache: dict[tuple, Moments] = {}


def cache_key(module: nn.Module) -> tuple:
    values = tuple(tuple(t.detach().flatten().tolist()) for t in [*module.parameters(), *module.buffers()])
    return type(module), repr(module), values


def gaussian_moments(activation: str | nn.Module, loc: float = 0.0, spread: float = 1.0) -> Moments:
    """Mean and std of f(x) for x ~ N(loc, spread^2), by quadrature; cached per module configuration."""
    module = in_float64(activation_module(activation))
    key = (*cache_key(module), loc, spread)
    if key not in _cache:
        if not is_elementwise(module):
            raise InitlintError(
                f"{type(module).__name__} is not elementwise, so its moments under N(0, 1) inputs "
                "depend on the rest of the tensor; initlint measures such modules in the probe instead."
            )
        x, weights = gaussian_grid(_GRID_POINTS)
        with torch.no_grad():
            y = module(loc + spread * x)
        mean = (weights * y).sum().item()
        variance = (weights * (y - mean) ** 2).sum().item()
        if not variance > 0:
            raise InitlintError(f"{module!r} is constant on Gaussian inputs; it has no renorm constants.")
        _cache[key] = Moments(mean, math.sqrt(variance))
    return _cache[key]


def renorm_constants(activation: str | nn.Module) -> tuple[float, float]:
    """(scale, bias) such that ``scale * f(x) + bias`` has mean 0, std 1 for x ~ N(0, 1)."""
    moments = gaussian_moments(activation)
    return moments.scale, moments.bias

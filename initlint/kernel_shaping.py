"""Kernel shaping: the constants around each nonlinearity that keep a deep network's C map healthy.

Fixing each nonlinearity's output to mean 0 and std 1 keeps the signal's scale, not its
geometry. What a layer does to two inputs of cosine c is its C map (Deep Kernel Shaping,
Martens et al. 2021): with f normalized to E[f(z)^2] = 1 for z ~ N(0, 1),

    C(c) = E[f(u) f(v)],  u, v ~ N(0, 1) with correlation c,  and  C'(1) = E[f'(z)^2].

A network's C map is the composition of its layers'. C(0) = 0 (f has mean 0) keeps unrelated
inputs unrelated; the whole body's slope at 1 sets how fast close inputs drift apart, and how
much gradients grow toward the input: the gradient's variance grows by C'(1) through each
nonlinearity, so its std by sqrt(C'(1)) over the body. DKS asks for a body slope of about 1.5;
initlint allows 2.25, the most that keeps gradients within 1.5x (sqrt(2.25)): each of L
nonlinearities in series then gets the slope 2.25 ** (1 / L). Tanh has a slope of 1.18 per layer
(1.18^30 = 137: close inputs decorrelate, chaos), centred ReLU 1.47, and ReLU left uncentred maps
orthogonal inputs to cosine 1/pi, and 30 of them to nearly 1 (collapse).

Each nonlinearity f becomes ``out_scale * (f(in_scale * x + in_shift) + out_shift)``: the input
constants bring its slope to the target. An f that is linear on one side (ReLU, GELU, SiLU, ELU,
softplus) is shifted toward that side, so its input keeps its scale (and a ReLU's slope, which no
scale changes, can move at all); a saturating f (tanh, sigmoid) is scaled toward its linear
middle; one with a kink at 0 and a linear range beside it (ReLU6) is shifted into that range.
The output constants give mean 0 and std 1. Expectations come from Simpson quadrature on the
grid of ``moments.gaussian_grid`` (coarser here: the slope needs the derivative, by autograd).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from initlint.inplace import module_out_of_place
from initlint.moments import cache_key, gaussian_grid, in_float64

BODY_SLOPE = 2.25
"""C'(1) of the whole body: gradients grow toward the input by at most sqrt(2.25) = 1.5x, close
inputs stay close (cos 0.9 maps to about 0.8). DKS's own 1.5 leaves each ReLU or SELU so near
linear (a shift of about 2 stds at 30 layers) that Adam at 1e-3 cannot bend it in 15 epochs
(benchmarks/train_digits.py, renorm nodes: relu x30 0.926 at 1.5, 0.941 at 2.25; selu 0.908,
0.936); a slope of 3 breaks the 1.5x gradient bound (1.64 measured)."""
_GRID_POINTS = 2**15 + 1
"""Spacing 7.3e-4: a ReLU's step in f' moves a slope by under 3e-4 (measured against the closed
form in the tests), against 0.014 between a 30-layer target (1.0136) and 1."""
_MAX_SHIFT = 8.0
"""Eight stds: relu(x + 8) is linear for all but 6e-16 of N(0, 1) inputs."""
_MIDDLES = [b / 4 for b in range(-4 * int(_MAX_SHIFT), 4 * int(_MAX_SHIFT) + 1)]
"""Shifts where an f with a kink at 0 and no linear side may be linear around: ReLU6's slope
is least at 3, the middle of its linear range [0, 6]."""
_BISECTIONS = 40
"""The bracket shrinks 2^40-fold: far below the quadrature's own error."""


@dataclass(frozen=True)
class Shaping:
    """``out_scale * (f(in_scale * x + in_shift) + out_shift)`` for x ~ N(0, 1)."""

    in_scale: float
    in_shift: float
    out_scale: float
    out_shift: float
    slope: float
    """C'(1) of the shaped nonlinearity."""


def layer_slope(depth: int) -> float:
    """The C'(1) each of ``depth`` nonlinearities in series gets, so that the body's is ``BODY_SLOPE``."""
    return BODY_SLOPE ** (1 / max(depth, 1))


def _moments(f: Callable[[torch.Tensor], torch.Tensor], scale: float, shift: float) -> tuple[float, float, float]:
    """Mean, variance and C'(1) of f(scale * z + shift), z ~ N(0, 1)."""
    z, weights = gaussian_grid(_GRID_POINTS)
    x = (scale * z + shift).requires_grad_()
    with torch.enable_grad():
        y = f(x)
        (derivative,) = torch.autograd.grad(y.sum(), x)
    y = y.detach()
    mean = (weights * y).sum().item()
    variance = (weights * (y - mean) ** 2).sum().item()
    slope = scale * scale * (weights * derivative * derivative).sum().item() / variance if variance > 0 else math.inf
    return mean, variance, slope


def _bisect(slope_at: Callable[[float], float], low: float, high: float, target: float) -> float:
    """The argument in [low, high] where a monotone ``slope_at`` crosses ``target``."""
    rising = slope_at(high) > slope_at(low)
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        if (slope_at(middle) > target) == rising:
            high = middle
        else:
            low = middle
    return (low + high) / 2


_cache: dict[tuple, Shaping] = {}


def shape(activation: nn.Module, target_slope: float) -> Shaping:
    """The constants that give ``activation`` mean 0, std 1 and C'(1) = ``target_slope`` on
    N(0, 1) inputs; its own slope where that is already at or below the target (a nearly
    linear f). ``activation`` must be elementwise (``moments.is_elementwise``). Cached per
    module configuration and target."""
    f = in_float64(module_out_of_place(activation))  # its input is a leaf that needs a gradient
    key = (*cache_key(f), target_slope)
    if key not in _cache:
        _cache[key] = _solve(f, target_slope)
    return _cache[key]


def _solve(f: nn.Module, target_slope: float) -> Shaping:
    scale, shift = 1.0, 0.0
    slope = lambda s, b: _moments(f, s, b)[2]  # noqa: E731
    if slope(1.0, 0.0) > target_slope:
        if slope(1.0, _MAX_SHIFT) < target_slope:  # linear on one side: a shift keeps the input's scale
            shift = _bisect(lambda b: slope(1.0, b), 0.0, _MAX_SHIFT, target_slope)
        elif abs(slope(1e-3, 0.0) - 1) < (target_slope - 1) / 2:  # saturating: a small scale makes f linear
            scale = _bisect(lambda s: slope(s, 0.0), 1e-3, 1.0, target_slope)
        else:  # linear in a middle range with a kink at 0 (ReLU6): a shift toward the middle
            middle = min(_MIDDLES, key=lambda b: slope(1.0, b))
            if slope(1.0, middle) < target_slope:
                shift = _bisect(lambda b: slope(1.0, b), 0.0, middle, target_slope)
    mean, variance, achieved = _moments(f, scale, shift)
    return Shaping(scale, shift, 1 / math.sqrt(variance), -mean, achieved)

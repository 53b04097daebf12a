"""The data-driven gain for a stack of ``depth`` (Linear -> activation) layers.

``calculate_gain`` answers one question: which weight scale keeps the *forward* std fixed.
A deep stack must also keep the *backward* signal: tanh's 5/3 holds the forward std near 0.65
yet lets the input's gradient grow tens of times over 50 layers. Here each candidate gain is
tried on a simulated stack (weights N(0, gain^2 / width), zero bias, N(0, 1) inputs, a N(0, 1)
cotangent at the output). Among the gains whose forward std stays within ``band`` of the
input's at every depth, the recommendation is the one whose gradient drifts least.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from initlint.moments import activation_module

COARSE_GAINS = tuple(round(0.5 + 0.05 * i, 2) for i in range(51))  # 0.50 .. 3.00
FINE_STEP = 0.01


@dataclass
class StackCurves:
    gain: float
    forward_std: list[float]
    """std of each layer's activation output, layer 1 first."""
    grad_std: list[float]
    """std of the gradient at each layer's activation output, relative to the output's."""

    def worst(self, values: list[float]) -> float:
        return max(abs(math.log(v)) if v > 0 else math.inf for v in values)

    @property
    def forward_drift(self) -> float:
        return self.worst(self.forward_std)

    @property
    def gradient_drift(self) -> float:
        return self.worst(self.grad_std)

    def to_dict(self) -> dict:
        return {"gain": self.gain, "forward_std": self.forward_std, "grad_std": self.grad_std}


def stack_curves(
    activation: nn.Module, gain: float, depth: int, width: int, batch: int = 256, seed: int = 0
) -> StackCurves:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, width, generator=generator, requires_grad=True)
    outputs, h = [], x
    for _ in range(depth):
        weight = torch.randn(width, width, generator=generator) * (gain / math.sqrt(width))
        h = activation(h @ weight.T)
        h.retain_grad()
        outputs.append(h)
    cotangent = torch.randn(h.shape, generator=generator)
    h.backward(cotangent)
    reference = outputs[-1].grad.std().item()
    return StackCurves(
        gain=gain,
        forward_std=[o.std().item() for o in outputs],
        grad_std=[o.grad.std().item() / reference for o in outputs],
    )


def _best(curves: list[StackCurves], band: float) -> StackCurves | None:
    feasible = [c for c in curves if c.forward_drift <= math.log(band)]
    return min(feasible, key=lambda c: (c.gradient_drift, c.forward_drift), default=None)


def recommend_gain(
    activation: str | nn.Module, depth: int, width: int = 128, band: float = 4.0, seed: int = 0
) -> StackCurves | None:
    """The gain with the least gradient drift among those whose forward std stays in band
    (a 0.05 grid over 0.5..3, refined to 0.01 around the best); None when none stays in band.
    Every candidate sees the same random weights, so the curves are smooth in the gain."""
    module = activation_module(activation)

    def curves(gains) -> list[StackCurves]:
        with torch.enable_grad():
            return [stack_curves(module, g, depth, width, batch=width, seed=seed) for g in gains]

    coarse = _best(curves(COARSE_GAINS), band)
    if coarse is None:
        return None
    fine = [round(coarse.gain + FINE_STEP * i, 2) for i in range(-4, 5) if i and coarse.gain + FINE_STEP * i > 0]
    return _best([coarse, *curves(fine)], band)


def pytorch_gain(name: str) -> float | None:
    """``torch.nn.init.calculate_gain`` where PyTorch defines it for this name, else None."""
    try:
        return nn.init.calculate_gain(name)
    except ValueError:
        return None

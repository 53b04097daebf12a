"""The data-driven gain for a stack of ``depth`` (Linear -> activation) layers.

``calculate_gain`` answers one question: which weight scale keeps the *forward* std fixed.
A deep stack must also keep the *backward* signal: tanh's 5/3 holds the forward std near 0.65
yet lets the input's gradient grow tens of times over 50 layers. Here each candidate gain is
tried on a simulated stack (weights N(0, gain^2 / width), zero bias, N(0, 1) inputs, a N(0, 1)
cotangent at the output). Among the gains whose forward std stays within ``band`` of the
input's at every depth, the recommendation is the one whose gradient drifts least.

Every candidate sees the same inputs, weights and cotangent, so the curves are smooth in the
gain, and the candidates of one search step run as one batched pass (the gain scales each
candidate's slice of the batch): a coarse grid, then finer grids around the best so far.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from initlint.moments import activation_module
from initlint.progress import Progress

MIN_GAIN, MAX_GAIN = 0.5, 3.0
COARSE_STEP = 0.25
REFINE_STEPS = (0.05, 0.01)
"""Each refinement tries 4 steps either side of the best so far: together they cover the
previous step's gap, so the search ends on the 0.01 grid."""
SAMPLES = 32
"""Probe samples per candidate: each std is taken over SAMPLES x width values (4096 at width
128), within about 2 % of the population's."""
CHUNK_BYTES = 256 * 2**20
"""Activations of at most this many bytes per batched pass; more candidates run in turns."""
SMALL_WIDTH = 512
"""Up to this width the matrices are small enough that one thread is faster: a second one
costs more in start-up and contention (5x slower on a busy 2-core machine) than it gains."""
BYTES_PER_ACTIVATION = 16
"""Per candidate, layer, sample and unit autograd keeps a pre-activation and an output, and the
backward pass adds their gradients: four float32 values."""


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


def stack_bytes(depth: int, width: int) -> int:
    """Memory of the shared weights plus one candidate's activations."""
    return depth * width * (width * 4 + SAMPLES * BYTES_PER_ACTIVATION)


class Stack:
    """One random stack (inputs, unit-gain weights, cotangent) on which gains are tried."""

    def __init__(self, activation: str | nn.Module, depth: int, width: int, seed: int = 0,
                 progress: Progress = Progress()) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.activation = activation_module(activation)
        self.inputs = torch.randn(SAMPLES, width, generator=generator)
        self.weights = [torch.randn(width, width, generator=generator) / math.sqrt(width) for _ in range(depth)]
        self.cotangent = torch.randn(SAMPLES, width, generator=generator)
        self.progress = progress
        per_candidate = depth * SAMPLES * width * BYTES_PER_ACTIVATION
        self.chunk = max(1, CHUNK_BYTES // per_candidate)

    def curves(self, gains: Sequence[float]) -> list[StackCurves]:
        """The forward and gradient curves of each gain, a chunk of candidates per pass."""
        chunks = [gains[i:i + self.chunk] for i in range(0, len(gains), self.chunk)]
        self.progress.phase(f"gains {gains[0]:.2f}..{gains[-1]:.2f}", len(chunks) * len(self.weights))
        threads = torch.get_num_threads()
        torch.set_num_threads(1 if self.inputs.shape[1] <= SMALL_WIDTH else threads)
        try:
            with torch.enable_grad():
                return [curve for chunk in chunks for curve in self._batched(chunk)]
        finally:
            torch.set_num_threads(threads)
            self.progress.done()

    def _batched(self, gains: Sequence[float]) -> list[StackCurves]:
        scale = torch.tensor(gains, dtype=torch.float32).view(-1, 1, 1)
        shape = (len(gains), *self.inputs.shape)
        h = self.inputs.expand(shape).clone().requires_grad_(True)
        outputs = []
        for weight in self.weights:
            h = self.activation((h @ weight.T) * scale)
            h.retain_grad()
            outputs.append(h)
            self.progress.advance()
        (h * self.cotangent).sum().backward()  # a scalar: backward(cotangent) imports sympy's shape code (1 s)
        forward = torch.stack([o.detach().flatten(1).std(1) for o in outputs], 1)
        backward = torch.stack([o.grad.flatten(1).std(1) for o in outputs], 1)
        backward = backward / backward[:, -1:]
        return [StackCurves(gain, f.tolist(), b.tolist()) for gain, f, b in zip(gains, forward, backward)]


def _in_band(curves: StackCurves, band: float) -> bool:
    return curves.forward_drift <= math.log(band)


def _leader(curves: list[StackCurves], band: float) -> StackCurves:
    """The best so far: the least gradient drift among those whose forward std stays in band,
    else the one nearest to the band (the window of ReLU's gains is narrower than a coarse step)."""
    feasible = [c for c in curves if _in_band(c, band)]
    if feasible:
        return min(feasible, key=lambda c: (c.gradient_drift, c.forward_drift))
    return min(curves, key=lambda c: c.forward_drift)


def _grid(step: float, around: float | None = None) -> list[float]:
    """Gains of ``step`` within MIN_GAIN..MAX_GAIN: all of them, or 4 either side of ``around``."""
    if around is None:
        count = round((MAX_GAIN - MIN_GAIN) / step)
        return [round(MIN_GAIN + step * i, 2) for i in range(count + 1)]
    nearby = (round(around + step * i, 2) for i in range(-4, 5) if i)
    return [g for g in nearby if MIN_GAIN <= g <= MAX_GAIN]


def recommend_gain(activation: str | nn.Module, depth: int, width: int = 128, band: float = 4.0,
                   seed: int = 0, stack: Stack | None = None) -> StackCurves | None:
    """The gain with the least gradient drift among those whose forward std stays in band (a
    0.25 grid over 0.5..3, refined to 0.05, then 0.01, around the best or, while none is in
    band, the nearest); None when none stays in band."""
    stack = stack or Stack(activation, depth, width, seed)
    best = _leader(stack.curves(_grid(COARSE_STEP)), band)
    for step in REFINE_STEPS:
        best = _leader([best, *stack.curves(_grid(step, best.gain))], band)
    return best if _in_band(best, band) else None


def pytorch_gain(name: str) -> float | None:
    """``torch.nn.init.calculate_gain`` where PyTorch defines it for this name, else None."""
    try:
        return nn.init.calculate_gain(name)
    except ValueError:
        return None

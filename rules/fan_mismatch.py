"""IL502 fan-mismatch."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn

from initlint.graph import INPUT, READS_PAIRS, NodeView, SignalGraph
from initlint.rule import Example, Finding, Rule

_NAMED = 3
"""Largest contributors named in a message; the finding's data lists every layer."""


def _relu_mlp(widths: list[int], mode: str, batchnorm: bool = False) -> nn.Module:
    """Linear -> ReLU through ``widths`` (Linear -> BatchNorm1d -> ReLU with ``batchnorm``),
    Kaiming init with ``mode``, zero biases, a 10-way head."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        linear = nn.Linear(fan_in, fan_out)
        nn.init.kaiming_normal_(linear.weight, mode=mode, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        layers += [linear, *([nn.BatchNorm1d(fan_out)] if batchnorm else []), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], 10))


_WIDENING = [8, 16, 32, 64, 128, 256, 512, 1024]


def widening_mlp_fan_in() -> nn.Module:
    """An MLP that doubles its width seven times, 8 -> 1024, with Kaiming fan-in init."""
    return _relu_mlp(_WIDENING, "fan_in")


def widening_mlp_fan_out() -> nn.Module:
    """The same MLP with Kaiming fan-out init: the disagreement does not depend on the mode."""
    return _relu_mlp(_WIDENING, "fan_out")


def widening_mlp_batchnorm() -> nn.Module:
    """The widening MLP with a BatchNorm after every Linear: each Linear is scale-invariant, so
    the drift of its gradient corrects itself in training (MobileNet's and EfficientNet's
    expansions, all followed by BatchNorm, are the same)."""
    return _relu_mlp(_WIDENING, "fan_in", batchnorm=True)


def square_mlp() -> nn.Module:
    """Linear(16, 256), then five Linear(256, 256): the width changes only at the input layer."""
    return _relu_mlp([16, *[256] * 6], "fan_in")


def bottleneck_mlp() -> nn.Module:
    """Linear(64, 512), Linear(512, 512), Linear(512, 64): one 8x contraction after the input layer."""
    return _relu_mlp([64, 512, 512, 64], "fan_in")


def _positions(view: NodeView, features: int) -> float:
    """Positions per sample (pixels, tokens): the elements per sample over the features."""
    shape = view.stats.shape
    return math.prod(shape[1:]) / shape[features]


@dataclass(frozen=True)
class _Layer:
    """A weighted layer of the body whose forward and backward factors are its own."""

    view: NodeView
    source: NodeView
    forward: float
    """Across-sample std at the output over that at the input."""
    backward: float
    """Gradient std at the input over that at the output."""

    @property
    def features(self) -> int:
        """The features' dim: a Linear's last, a conv's channels."""
        return -1 if self.view.kind.name == "linear" else 1

    @property
    def ratio(self) -> float:
        """Backward over forward factor, per position: sqrt(fan_out / fan_in) whatever the init."""
        positions = _positions(self.source, self.features) / _positions(self.view, self.features)
        return self.backward / self.forward * math.sqrt(positions)

    def describe(self) -> str:
        widths = f"{self.source.stats.shape[self.features]} -> {self.view.stats.shape[self.features]}"
        return f"{self.view.label} ({widths}, {self.ratio:.3g}x)"


def _layers(graph: SignalGraph) -> list[_Layer]:
    """Weighted layers of the body whose forward and backward factors are their own: the input
    feeds nothing else (else its gradient sums its users'), is not a network input (whose
    gradient trains nothing), and carries a measurable signal; and whose weights' scale
    matters (no normalization layer follows it). A layer whose columns pair its inputs as
    (B, -B) (a looks-linear init) is skipped too: it reads each pair's difference, with half
    the rank, so its ratio is that structure's, not the widths'."""
    layers = []
    for view in graph.body():
        if "weighted" not in view.roles or READS_PAIRS in view.roles or graph.normalized_before_nonlinearity(view.name):
            continue
        source = graph.view(view.inputs[0])
        out, inp = view.stats, source.stats
        if inp is None or source.users != [view.name] or INPUT in source.roles:
            continue
        grads = (inp.grad_std, out.grad_std)
        if not (inp.signal_resolved() and out.sample_std and all(g and math.isfinite(g) for g in grads)):
            continue
        layers.append(_Layer(view, source, out.sample_std / inp.sample_std, inp.grad_std / out.grad_std))
    return layers


def _span(ratios: list[float]) -> float:
    """How far apart the running product of ``ratios`` (starting from 1) ranges: max over min."""
    running, low, high = 1.0, 1.0, 1.0
    for ratio in ratios:
        running *= ratio
        low, high = min(low, running), max(high, running)
    return high / low


class FanMismatch(Rule):
    """The forward and backward conditions of the layers' init disagree along the body.

    What it does:
    For each weighted layer of the body (the main path up to the head, as IL101) past the input
    layer, measures its forward factor (the across-sample std at its output over that at its
    input) and its backward factor (the gradient std at its input over that at its output).
    For a Linear with i.i.d. weights their ratio is sqrt(fan_out / fan_in), whatever the weights'
    scale: Kaiming's fan-in condition holds the forward std and its fan-out condition the
    gradient, and the two differ by that ratio. The ratio is counted per position: a stride-s
    conv sends each input element the gradient of s^2 fewer outputs, but the weights before it
    sum their gradient over s^2 more positions, so a conv of any stride gives sqrt(C_out / C_in).
    Flags the body when the running product of the ratios spans more than ``band`` (its
    largest value over its smallest, starting from 1), and names the layers that contribute
    most. A layer whose input also feeds another layer (a residual branch) is skipped, as its
    input's gradient is the sum over its users; so is the input layer, whose backward factor
    reaches only the data (also when the input is reshaped first, as wav2vec2's raw audio is
    given a channel dim), and so is a layer that a normalization layer follows: its weights
    are scale-invariant, their gradient is orthogonal to them, and SGD's effective step on
    them, lr * |grad| / |W|^2, corrects itself (Arora, Li and Lyu, 2019), so MobileNet's and
    EfficientNet's BatchNorm-ed expansions are no fault. So is a layer whose columns pair its
    inputs as (B, -B), the looks-linear init ``initlint fix`` draws between two layers around
    a ReLU-like activation: it reads each pair's difference, half its rank, and its ratio
    is that structure's, not the widths'.

    Why is this bad?
    No gain holds both directions: with fan-in init the forward std holds and the gradient
    drifts by the reported factor across the layers (IL501's symptom), with fan-out init the
    gradient holds and the signal drifts by it (IL101's), and Xavier's average leaves roughly
    its square root on each. Early and late layers then get updates of different sizes, which
    one SGD learning rate cannot suit (adaptive optimizers such as Adam rescale each update
    and hide much of it). Changing the init only moves the problem from one direction to the
    other: its cause is the widths.

    Example:
    An MLP that doubles its width seven times, 8 -> 1024: each layer past the first has a ratio
    of ~1.41, so the two conditions disagree ~8x.

    Fix:
    Change the width once, at the input layer or the head, and keep the body's widths equal;
    or decide which direction to hold (``mode="fan_in"`` for the signal, ``"fan_out"`` for the
    gradient) and give each layer a learning rate in proportion (as muP does), or train with
    an adaptive optimizer.

    Thresholds: ``band`` (4.8) is the largest allowed span. A chain's span is the square root
    of its change of width past the input layer, so widths that double give 2.83 (8x), 4
    (16x), 5.66 (32x): 4.8 lies between the last two, where no noise decides. A 16x change
    leaves the gradient of a fan-in init drifting 4x, IL501's band; a 32x change goes beyond
    it. Measured over five seeds: square layers 1.0 to 1.1, a 64 -> 512 -> 512 -> 64
    bottleneck 2.6 to 3.0 (its expansion is the input layer's), a VGG-style stack
    64 -> 512 3.0, six doublings 7.2 to 9.5.
    """

    code = "IL502"
    name = "fan-mismatch"
    thresholds = {"band": 4.8}
    needs_structure = True
    about_widths = True
    flagged = [Example(widening_mlp_fan_in), Example(widening_mlp_fan_out)]
    clean = [Example(square_mlp), Example(bottleneck_mlp), Example(widening_mlp_batchnorm)]

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        layers = _layers(graph)
        span = _span([layer.ratio for layer in layers])
        band = self.limits["band"]
        if span <= band:
            return
        largest = sorted(layers, key=lambda layer: abs(math.log(layer.ratio)), reverse=True)
        named = "; ".join(layer.describe() for layer in largest[:_NAMED])
        yield self.finding(
            largest[0].view, "warning",
            f"the layers' forward and backward conditions disagree {span:.3g}x along the body "
            f"(band {band:g}x): each layer scales the gradient sqrt(fan_out / fan_in) times more "
            f"than the signal, whatever its init, so fan-in init lets the weights' gradients "
            f"drift {span:.3g}x across these layers and fan-out init the signal; most from "
            f"{named}. Keep the body's widths equal (change width at the input layer or the "
            "head), or hold one direction and scale each layer's learning rate to match",
            band=band, span=span,
            layers=[
                {"node": layer.view.name, "module": layer.view.module, "forward": layer.forward,
                 "backward": layer.backward, "ratio": layer.ratio}
                for layer in layers
            ],
        )

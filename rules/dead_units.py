"""IL202 dead-units."""

from __future__ import annotations

import math
from collections.abc import Iterator

import networkx as nx
import torch.nn as nn
from initlint.rules._models import gain_init, mlp

from initlint.graph import SQUEEZE, SignalGraph
from initlint.rule import Example, Finding, Rule
from initlint.stats import NodeStats

ZERO_CLAMPING = frozenset({"relu", "relu6", "hardswish"})
"""Activations that output exactly 0, with slope 0, on a half-line (hardswish below -3)."""


def negative_bias_mlp() -> nn.Module:
    """Three Linear -> ReLU layers with default weights and every bias set to -1, as a highway
    gate's would be: the first layer's pre-activations are N(-1, 0.58^2), so each unit fires for
    4 % of inputs, and every later layer sees almost nothing but its bias."""
    def init(linear: nn.Linear) -> None:
        nn.init.constant_(linear.bias, -1.0)
    return mlp(3, 64, nn.ReLU, init)


def kaiming_relu_mlp() -> nn.Module:
    """Twelve Linear -> ReLU layers with Kaiming weights and zero bias: pre-activations are
    centred, so under half of any layer's units read as dead (0.28 at most with seed 0)."""
    return mlp(12, 64, nn.ReLU, gain_init(2**0.5))


def _cause(pre: NodeStats | None) -> str:
    """Why the units are off, from the activation's input: a negative mean, or per-unit offsets."""
    if pre is None or pre.sample_std is None:
        return ""
    if pre.mean < 0:
        return (f" (its input has mean {pre.mean:.3g} against an input-dependent std of "
                f"{pre.sample_std:.3g}: a negative shift holds the units below 0)")
    return (f" (its input has mean {pre.mean:.3g}, input-dependent std {pre.sample_std:.3g} "
            f"and per-unit offsets of std {pre.offset_std:.3g})")


def _squeeze_branches(graph: SignalGraph) -> set[str]:
    """Nodes fed by a squeeze (a pool that only reaches the output through a gate)."""
    return set().union(*(nx.descendants(graph.signal_dag, s.name) for s in graph.with_role(SQUEEZE)))


class DeadUnits(Rule):
    """Most units of a ReLU-like activation are 0 for every probe sample.

    What it does:
    For each relu, relu6 and hardswish, counts the values per sample (units, or channel and
    position for a convolution) that are exactly 0 for every sample of the probe batch, and
    flags the activation when that share exceeds ``max_fraction``. The message gives the mean
    of the activation's input against its input-dependent std, which says why: a negative
    shift (a bias, or weights with a negative mean) holds the units below 0. Activations on a
    squeeze branch (a pooled path that only feeds a gate) are skipped: a global average of white
    probes is nearly constant across samples, so those units read as on or off by the sign of
    their bias alone, and IL401 judges the gate.

    Why is this bad?
    A unit that is 0 for every input passes no signal, and its slope there is 0, so no gradient
    reaches the weights before it: it cannot come back to life by training. A layer with most of
    its units dead runs at a fraction of its width, and the layers after it see mostly its bias.

    Example:
    ``nn.init.constant_(linear.bias, -1.0)`` on Linear layers with default weights before
    ReLUs: the first layer's units fire for 4 % of inputs (about 70 % read as dead with 8
    samples), and in every later layer all of them are dead.

    Fix:
    Initialize the biases before ReLUs to 0 (or a small positive value) and the weights with
    ``nn.init.kaiming_normal_(..., nonlinearity="relu")``, or put a normalization layer before
    the activation; a leaky ReLU or GELU keeps a gradient where a ReLU has none.

    Thresholds: ``max_fraction`` (0.7) is the share of dead values that triggers; beyond
    ``error_fraction`` (0.9) the finding is an error. A unit that fires with probability p is
    read as dead with probability (1 - p)^B for a probe batch of B (1/256 for p = 0.5, B = 8).
    When pre-activations are centred (zero mean over units), at most half the units are dead
    in expectation however correlated the samples become, as they do in deep plain ReLU stacks:
    Kaiming ReLU MLPs of width 64 to 256 read at most 0.36 at depth 8, 0.53 at depth 20 and 0.63
    at depth 100 (six seeds each). Narrow ones fluctuate more and reach 0.7 to 0.88 at width 16
    to 32 and depth 50 to 100, where deep narrow ReLU nets are known to collapse (Lu et al.,
    "Dying ReLU and Initialization", 2019). More than 0.7 needs a negative shift; 0.9 leaves a
    tenth of the layer.
    """

    code = "IL202"
    name = "dead-units"
    thresholds = {"max_fraction": 0.7, "error_fraction": 0.9}
    flagged = [Example(negative_bias_mlp)]
    clean = [Example(kaiming_relu_mlp)]

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        skipped = _squeeze_branches(graph)
        for view in graph.nodes.values():
            dead = view.stats.dead_fraction if view.stats else None
            if (view.kind.name not in ZERO_CLAMPING or view.name in skipped or dead is None
                    or dead <= self.limits["max_fraction"]):
                continue
            pre = graph.view(view.inputs[0]).stats if view.inputs else None
            values = math.prod(view.stats.shape[1:])
            yield self.finding(
                view,
                "error" if dead > self.limits["error_fraction"] else "warning",
                f"{dead:.0%} of the {values} values per sample of this {view.kind.name} are 0 for "
                f"all {view.stats.shape[0]} probe samples{_cause(pre)}; dead units pass nothing and "
                "get no gradient. Zero the bias before it, use Kaiming init, or normalize its input",
                dead_fraction=dead, values_per_sample=values, zero_fraction=view.stats.zero_fraction,
                input_mean=pre.mean if pre else None,
                input_sample_std=pre.sample_std if pre else None,
                input_offset_std=pre.offset_std if pre else None,
            )

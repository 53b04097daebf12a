"""IL401 degenerate-gate."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn as nn

from initlint.graph import GATE, SignalGraph
from initlint.rule import Example, Finding, Rule


class SqueezeExcite(nn.Module):
    """x * sigmoid(expand(relu(reduce(mean over positions of x)))), as in SENet."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, channels // reduction, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(channels // reduction, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


def se_net() -> nn.Module:
    """Two conv stages, each followed by a squeeze-excitation block, with default init."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), SqueezeExcite(16),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), SqueezeExcite(16),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


@torch.no_grad()
def se_net_after_lsuv() -> nn.Module:
    """The same net after a capped LSUV-style loop that asks each SE activation for mean 0, std 1.

    A sigmoid cannot reach either target, so the loop drives its bias down and its weights up
    until the iteration cap stops it.
    """
    model = se_net()
    probe = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for block in (m for m in model.modules() if isinstance(m, SqueezeExcite)):
        for layer, activation in ((block.reduce, block.act), (block.expand, block.gate)):
            for _ in range(10):
                seen: list[torch.Tensor] = []
                handle = activation.register_forward_hook(lambda m, i, o: seen.append(o))
                model(probe)
                handle.remove()
                if not seen[0].std() > 0:  # a dead ReLU: LSUV implementations stop there
                    break
                layer.bias -= seen[0].mean()
                layer.weight /= seen[0].std()
    return model


class DegenerateGate(Rule):
    """A gate (a sigmoid into a multiply) is stuck at 0 or 1, or its bias pins it there.

    What it does:
    For each gate, a sigmoid-like output that multiplies another value as in
    squeeze-excitation, measures the share of its pre-activations in the flat tails (outputs
    pinned near 0 or 1), and flags the gate when most are there, or when its pre-activation is
    dominated by a constant offset (the bias) that holds the mean gate near 0 or 1. One finding
    per gate.

    Why is this bad?
    A gate stuck at 0 cuts the branch it multiplies; stuck at 1 it does nothing; either way
    its slope is ~0 and it cannot learn to open. LSUV-style init leaves gates like this: it
    asks every activation for mean 0 and std 1, which a sigmoid cannot give, so the loop
    drives the bias and the weights until its iteration cap.

    Example:
    A squeeze-excitation block after ``for _ in range(10): bias -= out.mean();
    weight /= out.std()`` on its sigmoid output: the weights grow ~1000x and the gate is 0 or 1
    for almost every sample.

    Fix:
    Exclude gates from LSUV (polish only the layers before ordinary activations), or aim the
    gate at mean 1 instead of mean 0, std 1: NF-Nets multiply the sigmoid by 2. Re-initialize
    the gate's last layer with its default init.

    Thresholds: ``max_stuck_fraction`` (0.5) is the share of pinned outputs that triggers;
    ``bias_ratio`` (3.0) is how many times the input-dependent std a constant offset must be to
    dominate; ``extreme_mean`` (0.1) is how close to 0 or 1 the mean gate must then be.
    """

    code = "IL401"
    name = "degenerate-gate"
    thresholds = {"max_stuck_fraction": 0.5, "bias_ratio": 3.0, "extreme_mean": 0.1}
    needs_structure = True
    flagged = [Example(se_net_after_lsuv, ((8, 3, 16, 16),))]
    clean = [Example(se_net, ((8, 3, 16, 16),))]

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        for gate in graph.with_role(GATE):
            pre = graph.view(gate.inputs[0]).stats
            stuck = gate.stats.saturated_fraction if gate.stats else None
            if stuck is None or pre is None or pre.sample_std is None:
                continue
            offset = math.hypot(pre.mean, pre.offset_std)
            mean = gate.stats.mean
            dominated = offset > self.limits["bias_ratio"] * pre.sample_std and (
                min(mean, 1 - mean) < self.limits["extreme_mean"]
            )
            if stuck <= self.limits["max_stuck_fraction"] and not dominated:
                continue
            cause = (
                f"a constant offset (the bias) of {offset:.3g} dominates its pre-activation, whose "
                f"input-dependent std is {pre.sample_std:.3g}"
                if offset > pre.sample_std
                else f"its pre-activation is scaled up to an input-dependent std of {pre.sample_std:.3g}"
            )
            yield self.finding(
                gate, "error",
                f"gate pinned near {'0' if mean < 0.5 else '1'}: {stuck:.0%} of its outputs sit in "
                f"the flat tails (mean gate {mean:.3g}); {cause}",
                stuck_fraction=stuck, gate_mean=mean, gate_std=gate.stats.std,
                pre_activation_offset=offset, pre_activation_sample_std=pre.sample_std,
            )

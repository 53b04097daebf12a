"""IL201 saturated-activation."""

from __future__ import annotations

from collections.abc import Iterator

import torch.nn as nn
from initlint.rules._models import gain_init, mlp

from initlint.graph import GATE, SignalGraph
from initlint.probe import SATURATION_SLOPE
from initlint.rule import Example, Finding, Rule


def tanh_stack_unit_normal_weights() -> nn.Module:
    """Six Linear -> Tanh layers whose weights are N(0, 1): pre-activations have std ~8."""
    def init(linear: nn.Linear) -> None:
        nn.init.normal_(linear.weight)
        nn.init.zeros_(linear.bias)
    return mlp(6, 64, nn.Tanh, init)


def tanh_stack_xavier() -> nn.Module:
    """The same stack with Xavier weights (gain 1): pre-activations stay near std 1."""
    return mlp(6, 64, nn.Tanh, gain_init(1.0))


class SaturatedActivation(Rule):
    """Most inputs of a sigmoid, tanh, hardtanh, hardsigmoid or softsign lie in its flat region.

    What it does:
    For each saturating activation (gates excepted: IL401 covers them), measures the share of
    its probe inputs where the activation's slope is under 10 % of its maximum (|x| > 1.8 for
    tanh, > 3.6 for sigmoid, outside the clip range for the hard variants), and flags it when
    that share exceeds ``max_fraction``.

    Why is this bad?
    In the flat region the output barely depends on the input and the local gradient is close
    to zero, so the layers before it hardly learn; the output is close to a sign function,
    which loses the information the input carried.

    Example:
    ``nn.Linear(64, 64)`` with ``nn.init.normal_(weight)`` (std 1 instead of 1/8) feeding
    ``nn.Tanh()``: pre-activations have std ~8 and ~80 % of them saturate.

    Fix:
    Scale the preceding weights to fan-in (``xavier_normal_`` with ``calculate_gain``), put a
    normalization layer before the activation.

    Thresholds: ``max_fraction`` (0.5) is the saturated share that triggers; beyond
    ``error_fraction`` (0.9) the finding is an error.
    """

    code = "IL201"
    name = "saturated-activation"
    thresholds = {"max_fraction": 0.5, "error_fraction": 0.9}
    flagged = [Example(tanh_stack_unit_normal_weights)]
    clean = [Example(tanh_stack_xavier)]

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        for view in graph.nodes.values():
            fraction = view.stats.saturated_fraction if view.stats else None
            if fraction is None or GATE in view.roles or fraction <= self.limits["max_fraction"]:
                continue
            pre = graph.view(view.inputs[0]).stats
            yield self.finding(
                view,
                "error" if fraction > self.limits["error_fraction"] else "warning",
                f"{fraction:.0%} of the inputs of this {view.kind.name} lie where its slope is "
                f"under {SATURATION_SLOPE:.0%} of its maximum (input std {pre.std:.3g}, "
                f"mean {pre.mean:.3g})",
                saturated_fraction=fraction, input_std=pre.std, input_mean=pre.mean,
                activation=view.kind.name,
            )

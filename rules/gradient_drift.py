"""IL501 gradient-drift."""

from __future__ import annotations

from collections.abc import Iterator

import torch.nn as nn
from initlint.rules._models import gain_init, mlp

from initlint.drift import drift_along, outside
from initlint.graph import INPUT, SignalGraph
from initlint.rule import Example, Finding, Rule


def tanh_stack_gain_5_3() -> nn.Module:
    """Fifty Linear -> Tanh layers with Xavier gain 5/3: forward std holds, gradients grow."""
    return mlp(50, 64, nn.Tanh, gain_init(5 / 3))


def tanh_stack_gain_1_1() -> nn.Module:
    """The same stack with gain 1.1 keeps both the forward and the backward signal tame."""
    return mlp(50, 64, nn.Tanh, gain_init(1.1))


class GradientDrift(Rule):
    """The gradient std grows or shrinks from the output back to the input.

    What it does:
    Sends a Gaussian cotangent (std 1) back from every output and follows the gradient std along
    the body of the main path (up to the head, as IL101; an activation's gradient in the units
    of its Gaussian std, and values whose scale a norm sets or ignores left out, as there), from its
    output end back to the first layer's output (the input's own gradient trains nothing). Flags it when the gradient there is more than ``band`` times larger or smaller
    than at the output end, and reports where the drift starts and how far it goes.

    Why is this bad?
    The forward and backward conditions of an initialization are not the same (Kaiming's
    fan-in and fan-out conditions differ, and a gain that holds the forward std can make each
    layer's Jacobian expand). Early layers then get gradients tens of times larger, or smaller,
    than late ones: one learning rate cannot suit both, and training diverges or stalls.

    Example:
    Fifty ``Linear -> Tanh`` layers with ``xavier_normal_(gain=calculate_gain('tanh'))`` (5/3):
    the forward std settles near 0.65, yet the input's gradient is tens of times the output's.

    Fix:
    Choose the gain for both directions (``initlint gain tanh --depth 50`` suggests ~1.1 for
    tanh), use ``mode="fan_out"`` where the backward pass matters more, or add normalization.

    Thresholds: ``band`` (4.0) is the allowed factor up or down; beyond ``error_band`` (100.0)
    the finding is an error.
    """

    code = "IL501"
    name = "gradient-drift"
    thresholds = {"band": 4.0, "error_band": 100.0}
    needs_structure = True
    flagged = [Example(tanh_stack_gain_5_3)]
    clean = [Example(tanh_stack_gain_1_1)]

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        # as IL101, without values whose scale a norm sets or ignores; and no weight sees the
        # input's own gradient
        trained = [v for v in graph.scaled_body() if INPUT not in v.roles]
        drift = drift_along(trained[::-1], lambda v: v.signal_grad_std, self.limits["band"])
        if drift is None or not outside(drift.end_ratio, self.limits["band"]):
            return
        yield self.finding(
            drift.start, drift.severity(self.limits["error_band"]),
            f"the gradient std {drift.direction} from the output back towards the input "
            f"(relative to the body's output end, band {self.limits['band']:g}x): {drift.describe()}",
            band=self.limits["band"],
            **drift.data(),
        )

"""IL501 gradient-drift."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn
from initlint.rules._models import gain_init, max_pool_cnn, mlp, strided_cnn

from initlint.drift import drift_along, outside
from initlint.graph import INPUT, SignalGraph
from initlint.rule import Example, Finding, Rule


def tanh_stack_gain_5_3() -> nn.Module:
    """Fifty Linear -> Tanh layers with Xavier gain 5/3: forward std holds, gradients grow."""
    return mlp(50, 64, nn.Tanh, gain_init(5 / 3))


def tanh_stack_gain_1_1() -> nn.Module:
    """The same stack with gain 1.1 keeps both the forward and the backward signal tame."""
    return mlp(50, 64, nn.Tanh, gain_init(1.1))


class _BasicBlock(nn.Module):
    """ResNet's basic block: relu(x + BN(conv(relu(BN(conv(x)))))), PyTorch's default init."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.norm2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x))))))


def batchnorm_resnet() -> nn.Module:
    """A BatchNorm ResNet of eight basic blocks: the gradient grows ~8x toward the input (the
    known explosion of BatchNorm networks at init), but only scale-invariant convs see it."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        *[_BasicBlock(16) for _ in range(8)], nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


class GradientDrift(Rule):
    """The gradient's norm per sample grows or shrinks from the output back to the input.

    What it does:
    Sends a Gaussian cotangent (std 1) back from every output and follows the gradient's norm
    per sample along the body of the main path (up to the head, as IL101; an activation's
    gradient in the units of its Gaussian std, and values whose scale a norm sets or ignores
    left out, as there), from its output end back to the first layer's output (the input's own
    gradient trains nothing). Flags it when the gradient there is more than ``band`` times
    larger or smaller than at the output end, and reports where the drift starts and how far
    it goes.

    The norm per sample (the per-element std times the square root of the elements per sample)
    compares like with like across changes of resolution, where the per-element std does not:
    a 2x2 max pool routes each gradient to 1 of its 4 inputs, so the per-element std halves at
    every pool of a healthy CNN while the norm, and the weights' gradients (sums over
    positions), stay flat; a stride-2 conv with fan-in init likewise spreads the same norm over
    4x the positions. An average pool's Jacobian does shrink the norm (by 2 for 2x2), as it
    shrinks every gradient that flows through it. Width changes leave the norm of a fan-in
    init alone too: their disagreement is IL502's.

    Only gradients that train a weight whose scale matters are followed: a value counts when
    its gradient reaches a Linear, conv or embedding with no normalization layer between them.
    A layer whose output a norm reads is scale-invariant: its gradient is orthogonal to its
    weights, and SGD's effective step, lr * |grad| / |W|^2, corrects itself as a large gradient
    grows |W| (Arora, Li and Lyu, 2019). The gradient of a BatchNorm ResNet grows toward the
    input at init (1.4x a block in torchvision's resnet50), yet it only reaches such layers
    (and the norms' own affine parameters), and these networks train with one learning rate.

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
    about_the_path = True
    name = "gradient-drift"
    thresholds = {"band": 4.0, "error_band": 100.0}
    needs_structure = True
    flagged = [Example(tanh_stack_gain_5_3)]
    clean = [Example(tanh_stack_gain_1_1), Example(max_pool_cnn, ((4, 3, 64, 64),)),
             Example(strided_cnn, ((4, 3, 64, 64),)), Example(batchnorm_resnet, ((8, 3, 16, 16),))]

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        # as IL101, without values whose scale a norm sets or ignores; and without the
        # gradients that train no weight whose scale matters (the input's own, or one that
        # reaches weights only through a norm)
        trained = [
            v for v in graph.scaled_body() if INPUT not in v.roles and graph.trains_unnormalized_weights(v.name)
        ]
        drift = drift_along(trained[::-1], lambda v: v.signal_grad_norm, self.limits["band"])
        if drift is None or not outside(drift.end_ratio, self.limits["band"]):
            return
        yield self.finding(
            drift.start, drift.severity(self.limits["error_band"]),
            f"the gradient's norm per sample {drift.direction} from the output back towards the input "
            f"(relative to the body's output end, band {self.limits['band']:g}x): {drift.describe()}",
            band=self.limits["band"],
            **drift.data(),
        )

"""IL301 pooling-shrinkage."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn as nn

from initlint.graph import SQUEEZE, SignalGraph
from initlint.rule import Example, Finding, Rule


def _conv_net(pool: nn.Module, features: int, *after_pool: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        pool, *after_pool, nn.Flatten(), nn.Linear(features, 10),
    )


def eight_by_eight_pool_in_body() -> nn.Module:
    """Two conv layers, an 8x8 average pool, then more convs: inside the body, the pool leaves
    the next conv an eighth of the input-dependent std of white inputs."""
    return _conv_net(nn.AvgPool2d(8), 16, nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))


def global_pool_head() -> nn.Module:
    """Two conv layers, then a global average pool over 16x16 positions into a linear head:
    the head's summary is the design (reported as info, with its numbers)."""
    return _conv_net(nn.AdaptiveAvgPool2d(1), 16)


def two_by_two_pool() -> nn.Module:
    """The same convs with a 2x2 average pool: the std halves, which is no collapse."""
    return _conv_net(nn.AvgPool2d(2), 16 * 8 * 8)


class PoolingShrinkage(Rule):
    """An average pool or a mean over positions collapses the input-dependent variance.

    What it does:
    For each average / adaptive-average pool and each ``mean`` over non-batch dims, compares
    the across-sample std of its output with that of its input, and reports beside it what
    independent inputs would give (the variance divides by the number of pooled positions).
    Flags it when the std shrinks by more than ``min_std_ratio``. The across-sample part is
    measured separately from per-channel offsets, which a pool keeps. A squeeze that only feeds
    a gate (as in squeeze-excitation) is left to IL401.

    A pool that summarizes the sample is the design, not a fault: one that leaves no positions
    (the global average pool into the head of NiN, ResNet, SE-Net, EfficientNet, ConvNeXt, a
    video ResNet, or a pooling branch such as DeepLab's ASPP image pool, broadcast back over the
    map), or one whose positions go straight into Linear layers (VGG's adaptive pool). The probe's
    white inputs lose the most there, while natural images, being smooth, lose little; such a
    pool is reported as info, with its numbers, and never fails a check. The decision is read
    from what the pool's output does, not from class or module names.

    Why is this bad?
    With white inputs, averaging k positions divides the input-dependent variance by k while
    constant channel offsets pass unchanged. Inside the body, the layers after the pool then see
    mostly constants: their gradient carries little about the input and their initialization,
    tuned for unit variance, is wrong by a factor of sqrt(k).

    Example:
    An ``nn.AvgPool2d(8)`` between convolutions: 64 positions per output, the input-dependent
    std shrinks 8x before the next conv.

    Fix:
    Rescale after the pool by the measured shrinkage (the reported std ratio), put a
    normalization layer after it, or pool over fewer positions.

    Thresholds: ``min_std_ratio`` (0.25) is the smallest acceptable ratio of the output's
    across-sample std to the input's.
    """

    code = "IL301"
    name = "pooling-shrinkage"
    thresholds = {"min_std_ratio": 0.25}
    needs_structure = True
    flagged = [Example(eight_by_eight_pool_in_body, ((8, 3, 32, 32),)), Example(global_pool_head, ((8, 3, 16, 16),))]
    clean = [Example(two_by_two_pool, ((8, 3, 16, 16),))]

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        for pool in graph.with_role("pool"):
            if SQUEEZE in pool.roles:
                continue
            source = graph.view(pool.inputs[0])
            if pool.stats is None or source.stats is None:
                continue
            before, after = source.stats.sample_std, pool.stats.sample_std
            if not before or after is None or after / before >= self.limits["min_std_ratio"]:
                continue
            positions = math.prod(source.stats.shape[1:]) / math.prod(pool.stats.shape[1:])
            summary = graph.summarizes(pool)
            yield self.finding(
                pool, "info" if summary else "warning",
                f"the {pool.kind.name} shrinks the input-dependent std {before / after:.3g}x "
                f"({before:.3g} -> {after:.3g}); independent inputs would shrink it "
                f"{math.sqrt(positions):.3g}x ({positions:g} positions per output)"
                + ("; it summarizes the sample (a global pool or a pool into the head), which is "
                   "the design: smooth inputs such as images lose far less" if summary else ""),
                std_ratio=after / before,
                measured_variance_ratio=(after / before) ** 2,
                independent_variance_ratio=1 / positions,
                positions_per_output=positions,
                offset_std_before=source.stats.offset_std, offset_std_after=pool.stats.offset_std,
                summary=summary,
            )

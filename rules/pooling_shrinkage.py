"""IL301 pooling-shrinkage."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn as nn

from initlint.graph import SQUEEZE, SignalGraph
from initlint.rule import Example, Finding, Rule


def _conv_net(pool: nn.Module, features: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        pool, nn.Flatten(), nn.Linear(features, 10),
    )


def global_pool_head() -> nn.Module:
    """Two conv layers, then a global average pool over 16x16 positions into a linear head."""
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

    Why is this bad?
    With white inputs, averaging k positions divides the input-dependent variance by k while
    constant channel offsets pass unchanged, so after a global pool the head sees mostly
    constants: its gradient carries little about the input and its initialization, tuned for
    unit variance, is wrong by a factor of sqrt(k).

    Example:
    ``nn.AdaptiveAvgPool2d(1)`` after convolutions on a 16x16 map: 256 positions, the
    input-dependent std can shrink by up to 16x.

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
    flagged = [Example(global_pool_head, ((8, 3, 16, 16),))]
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
            yield self.finding(
                pool, "warning",
                f"the {pool.kind.name} shrinks the input-dependent std {before / after:.3g}x "
                f"({before:.3g} -> {after:.3g}); independent inputs would shrink it "
                f"{math.sqrt(positions):.3g}x ({positions:g} positions per output)",
                std_ratio=after / before,
                measured_variance_ratio=(after / before) ** 2,
                independent_variance_ratio=1 / positions,
                positions_per_output=positions,
                offset_std_before=source.stats.offset_std, offset_std_after=pool.stats.offset_std,
            )

"""IL102 mean-drift."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn
from initlint.rules._models import ResidualMLPBlock, gain_init, mlp

from initlint.graph import NodeView, SignalGraph
from initlint.rule import Example, Finding, Rule


def _residual_mlp(relu_last: bool, blocks: int = 32, width: int = 128) -> nn.Module:
    torch.manual_seed(0)
    stem, head = nn.Linear(width, width), nn.Linear(width, 10)
    nn.init.xavier_normal_(stem.weight)
    nn.init.zeros_(stem.bias)
    scale = blocks**-0.5
    return nn.Sequential(stem, *(ResidualMLPBlock(width, scale, relu_last) for _ in range(blocks)), head)


def residual_branches_end_in_relu() -> nn.Module:
    """32 residual blocks ``x + relu(outer(relu(inner(x)))) / sqrt(32)`` of width 128: the 1/sqrt(depth) scale
    holds the variance, but every branch adds a positive mean that nothing removes, and the
    stream's |mean| reaches ~5.8x its input-dependent std."""
    return _residual_mlp(relu_last=True)


def residual_branches_end_in_linear() -> nn.Module:
    """The same blocks whose branch ends in the Linear: its zero-mean weights re-centre what the
    ReLU shifted, and the stream's |mean| stays under 0.2x its std."""
    return _residual_mlp(relu_last=False)


def kaiming_relu_mlp_20() -> nn.Module:
    """Twenty Linear -> ReLU layers with Kaiming weights and zero bias: each ReLU shifts the mean
    by ~0.7x its std, and each Linear re-centres it."""
    return mlp(20, 64, nn.ReLU, gain_init(2**0.5))


def _mean_ratio(view: NodeView, input_std: float) -> float | None:
    """|mean| in units of the input-dependent std, or of the input's where that is larger: a
    mean that only looks large because the signal under it shrank is IL101's finding."""
    scale = max(view.stats.sample_std, input_std)
    return abs(view.stats.mean) / scale if scale > 0 else None


class MeanDrift(Rule):
    """A mean shift builds up along the main path until it dwarfs the signal.

    What it does:
    Follows the body of the main path (as IL101: through skip connections, up to the head) and
    measures at each value its |mean| in units of its input-dependent (across-sample) std, or of
    the input's where that is larger. Flags the path when that ratio is above ``band`` at the end
    of the body and was already above it two or more layer steps (depth) earlier: a shift that
    persists or grows with depth. An offset that the next layer removes, or one biased layer
    just before the head, is no drift.

    Why is this bad?
    A plain stack re-centres itself: a Linear with zero-mean weights turns its input's mean into
    per-unit offsets whose mean is ~0. Along a skip connection nothing re-centres, so every
    branch that ends in a ReLU (or softplus, GELU, any activation with a positive mean) adds to
    the mean, linearly with depth. Each later layer then receives per-unit offsets of about
    ratio x its input-dependent part: at a ratio of 3, half its ReLU units are on for more than
    97.7 % or less than 2.3 % of inputs (linear or dead), the weight gradients share one
    direction (the mean), and the samples become hard to tell apart.

    Example:
    32 residual blocks ``x + relu(outer(relu(inner(x)))) / sqrt(32)`` of width 128 with Kaiming
    weights: the 1/sqrt(depth) scale holds the std (IL101 is quiet), yet each branch adds its
    ReLU's mean (0.4x the std before it) to the stream, and at the end of the stream |mean| is
    ~5.8x the input-dependent std.

    Fix:
    End residual branches with a linear layer (or a normalization), not an activation; use a
    zero-mean activation, or subtract its Gaussian mean (the renorm bias that
    ``initlint gain ACTIVATION`` prints: -0.683 for relu); or normalize the stream.

    Thresholds: ``band`` (3.0) is the largest |mean| / std that may persist; at 3 the per-unit
    offsets of the next layer push half its ReLU units outside [2.3 %, 97.7 %] activity (the
    share is 2 * Phi(-2 / ratio)). A healthy ReLU output reads ~0.7 (0.4 / 0.58 for N(0, 1)
    inputs) and a Kaiming ReLU MLP stays under 0.7 at depth 50; the example above reads 5.8.
    Beyond ``error_band`` (10.0), 84 % of the next layer's units are linear or dead, and the
    finding is an error.
    """

    code = "IL102"
    about_the_path = True
    name = "mean-drift"
    thresholds = {"band": 3.0, "error_band": 10.0}
    needs_structure = True
    flagged = [Example(residual_branches_end_in_relu)]
    clean = [Example(residual_branches_end_in_linear), Example(kaiming_relu_mlp_20)]

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        body = [v for v in graph.body() if v.stats is not None and v.stats.sample_std is not None]
        if len(body) < 2:
            return
        input_std = body[0].stats.sample_std
        ratios = [(v, r) for v in body if (r := _mean_ratio(v, input_std)) is not None]
        band = self.limits["band"]
        above = [(v, r) for v, r in ratios if r > band]
        if not above:
            return
        end, end_ratio = ratios[-1]
        if end_ratio <= band or end.depth - above[0][0].depth < 2:
            return
        (start, start_ratio), (worst, worst_ratio) = above[0], max(above, key=lambda item: item[1])
        yield self.finding(
            start, "error" if worst_ratio > self.limits["error_band"] else "warning",
            f"a mean shift persists along the main path: |mean| / input-dependent std first passes "
            f"{band:g} at {start.label} (depth {start.depth}, {start_ratio:.3g}), reaches "
            f"{worst_ratio:.3g} at {worst.label} (depth {worst.depth}) and is {end_ratio:.3g} at the "
            f"end of the body, {end.label} (depth {end.depth}: mean {end.stats.mean:.3g}, std "
            f"{end.stats.sample_std:.3g}). Something adds a mean that nothing removes, e.g. residual "
            "branches that end in an activation: end them with a linear layer, centre the "
            "activation, or normalize",
            band=band, input_std=input_std,
            start_node=start.name, start_depth=start.depth, start_ratio=start_ratio,
            worst_node=worst.name, worst_depth=worst.depth, worst_ratio=worst_ratio,
            end_node=end.name, end_depth=end.depth, end_ratio=end_ratio,
            end_mean=end.stats.mean, end_sample_std=end.stats.sample_std,
        )

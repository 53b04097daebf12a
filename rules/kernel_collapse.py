"""IL105 kernel-collapse."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import networkx as nx
import torch
import torch.nn as nn

from initlint.graph import NodeView, SignalGraph
from initlint.kernel import CLOSE
from initlint.rule import Example, Finding, Rule
from initlint.rules._models import gain_init, mlp

_PAIRED_BATCH = ((32, 256),)
"""32 rows make 8 groups of input pairs: their mean cosine is then within ~0.03 at width 256."""


def _kaiming_relu(linear: nn.Linear) -> None:
    nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
    nn.init.zeros_(linear.bias)


def chaotic_tanh_stack() -> nn.Module:
    """Thirty Linear -> Tanh layers of width 256, Xavier gain 5/3: inputs at cosine 0.9 end at 0.16."""
    return mlp(30, 256, nn.Tanh, gain_init(5 / 3))


def collapsed_relu_stack() -> nn.Module:
    """Thirty Linear -> ReLU layers of width 256, Kaiming init: orthogonal inputs end at cosine 0.97."""
    return mlp(30, 256, nn.ReLU, _kaiming_relu)


def shallow_relu_mlp() -> nn.Module:
    """Three Linear -> ReLU layers of width 256, Kaiming init: orthogonal inputs end near 0.6."""
    return mlp(3, 256, nn.ReLU, _kaiming_relu)


class _PreNormResidual(nn.Module):
    """``x + f(norm(x))``: the skip carries the input's kernel past every branch."""

    def __init__(self, norm: nn.Module, branch: nn.Module) -> None:
        super().__init__()
        self.norm, self.branch = norm, branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(self.norm(x))


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, need_weights=False)[0]


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return build()


def residual_mlp_with_layer_norm() -> nn.Module:
    """Sixteen ``x + Linear(ReLU(Linear(LayerNorm(x))))`` blocks of width 256, default init."""
    return _seeded(lambda: nn.Sequential(*(
        _PreNormResidual(nn.LayerNorm(256), nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256)))
        for _ in range(16)
    )))


def pre_layer_norm_transformer() -> nn.Module:
    """Six pre-LayerNorm transformer blocks (attention, then a GELU MLP) of width 64 over 16 tokens."""
    def block() -> list[nn.Module]:
        mlp_branch = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64))
        return [_PreNormResidual(nn.LayerNorm(64), _Attention(64, 4)), _PreNormResidual(nn.LayerNorm(64), mlp_branch)]
    return _seeded(lambda: nn.Sequential(*(layer for _ in range(6) for layer in block()), nn.LayerNorm(64)))


class _BasicBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.branch(x))


def resnet_like_cnn() -> nn.Module:
    """A conv-BN-ReLU stem, eight basic residual blocks with BatchNorm, a global pool and a head."""
    return _seeded(lambda: nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        *(_BasicBlock(32) for _ in range(8)),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ))


def _after_batch_statistics(graph: SignalGraph) -> set[str]:
    """Nodes that a BatchNorm on batch statistics reaches: their values depend on the batch."""
    norms = [view.name for view in graph.nodes.values() if view.kind.name == "batch_norm"]
    return set(norms).union(*(nx.descendants(graph.dag, name) for name in norms))


def _first_lasting_crossing(walk: list[NodeView], past: Callable[[NodeView], bool]) -> NodeView | None:
    """The node from which every later node of ``walk`` is past the threshold, if its end is."""
    start = None
    for view in walk:
        start = (start or view) if past(view) else None
    return start


class KernelCollapse(Rule):
    """Distinct inputs come out nearly parallel (collapse), or close inputs nearly unrelated (chaos).

    What it does:
    Reads the kernel probe: pairs of inputs at cosine 0, 0.5 and 0.9, built from the probe
    batch's rows, go through the network in forward passes of their own, and each node records
    the cosine between the two outputs of a pair (each sample flattened, averaged over the
    pairs): the C map of Deep Kernel Shaping (Martens et al. 2021). Follows the body of the
    main path (as IL101: up to the head) and flags **collapse** when orthogonal inputs leave
    it with a cosine above ``collapse_cos`` and **chaos** when inputs at cosine 0.9 leave it
    below ``chaos_cos``, naming the node from which it stays past the threshold. The walk stops at
    the first BatchNorm: on batch statistics, as in training, it mixes the samples of a batch,
    so beyond it a pair's cosine depends on the rest of the batch (and each BatchNorm's
    centring removes the part that samples share, which decorrelates close pairs in ResNets
    and EfficientNets that train well: the C map of DKS is defined for networks that process
    each sample alone). Models whose inputs are token ids have no input cosine (the kernel
    probe is skipped, and the report's note says so); a probe batch needs at least 4 rows
    (one base and its three partners).

    Why is this bad?
    A collapsed network sends every input in nearly the same direction: at a cosine of 0.95,
    95 % of each output's energy is a part that all inputs share, so the output, and the
    gradient through it, hardly depends on which input came in. Deep ReLU stacks go this way
    whatever their variance: C(0) = 0.32, 0.49, 0.61, ... layer by layer (the arc-cosine
    kernel), past 0.9 at 13 layers, 0.95 at 21 and 0.97 at 30; ``collapse_cos`` = 0.95 leaves
    the stacks of a dozen layers that train without trouble alone. A chaotic network sends
    inputs that are nearly the same to unrelated outputs: it cannot generalize from one input
    to its neighbours, and its gradients explode. DKS asks the whole body for C(0) = 0 and a
    slope C'(1) of about 1.5 (then inputs at 0.9 stay at 0.85 or above); ``chaos_cos`` = 0.5
    is a secant slope (1 - C(0.9)) / 0.1 of 5, and every C map is convex, so C'(1) is at
    least that. Keeping each layer's variance at 1 does not help: a 30-layer width-256 tanh
    stack after the per-nonlinearity renorm of ``initlint fix`` ends at 0.29 for
    inputs at 0.9, one with Xavier gain 5/3 at 0.16; with gain 1 it keeps 0.86.

    Example:
    ``nn.Sequential(*[nn.Linear(256, 256), nn.ReLU()] * 30)`` with Kaiming init keeps its
    variance, yet orthogonal inputs come out at cosine 0.97 (collapse); the same stack of Tanh
    with ``xavier_normal_(gain=5/3)`` maps inputs at 0.9 to 0.16 (chaos).

    Fix:
    Skip connections with a normalization layer (a residual stream keeps its input's kernel),
    or shape the kernel without them: Deep Kernel Shaping or TAT choose each activation's
    input and output scale and shift so that the composed C map keeps C(0) near 0 and C'(1)
    near 1.5 for the given depth. For tanh, a smaller gain (near 1 rather than 5/3) moves the
    stack out of the chaotic phase.

    A collapse is a warning when the outputs' input-dependent parts are themselves alike
    (their cosine, the measured one with the offset all samples share taken out, above
    ``signal_collapse_cos``: a 30-layer Kaiming ReLU stack's reach 0.7), and info when that
    shared offset explains it: a textbook Kaiming CNN with max pools reaches 0.97 through the
    growing mean of its non-negative features, while its input-dependent parts stay orthogonal.

    Thresholds: ``collapse_cos`` (0.95) is the highest output cosine of orthogonal inputs;
    ``signal_collapse_cos`` (0.5) the highest cosine of their input-dependent parts for a
    warning; ``chaos_cos`` (0.5) the lowest output cosine of inputs at cosine 0.9.
    """

    code = "IL105"
    about_the_path = True
    name = "kernel-collapse"
    thresholds = {"collapse_cos": 0.95, "chaos_cos": 0.5, "signal_collapse_cos": 0.5}
    needs_structure = True
    flagged = [Example(chaotic_tanh_stack, _PAIRED_BATCH), Example(collapsed_relu_stack, _PAIRED_BATCH)]
    clean = [
        Example(shallow_relu_mlp, _PAIRED_BATCH), Example(residual_mlp_with_layer_norm, _PAIRED_BATCH),
        Example(pre_layer_norm_transformer), Example(resnet_like_cnn),
    ]

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        mixed = _after_batch_statistics(graph)
        walk = list(itertools.takewhile(lambda view: view.name not in mixed, graph.body()))
        walk = [view for view in walk if view.kernel is not None]
        if not walk:
            return
        collapse, chaos = self.limits["collapse_cos"], self.limits["chaos_cos"]
        yield from self._crossing(walk, 0.0, lambda c: c > collapse, collapse,
                                  "orthogonal inputs come out nearly parallel (collapse)", "above", self._collapse_severity)
        yield from self._crossing(walk, CLOSE, lambda c: c < chaos, chaos,
                                  f"inputs at cosine {CLOSE:g} come out nearly unrelated (chaos)", "below",
                                  lambda end: ("warning", ""))

    def _collapse_severity(self, end: NodeView) -> tuple[str, str]:
        """A warning when the outputs' input-dependent parts are themselves alike; info when the
        offset that all samples share explains the cosine (a plain CNN's max pools raise it)."""
        signal = input_dependent_cosine(end)
        if signal is None or signal > self.limits["signal_collapse_cos"]:
            return "warning", ""
        return "info", (f"; the offset all samples share makes up {offset_share(end):.0%} of the outputs' energy, "
                        f"and their input-dependent parts stay at cosine {signal:.2f}, so the signal itself "
                        "has not collapsed")

    def _crossing(self, walk: list[NodeView], input_cos: float, past: Callable[[float], bool], threshold: float,
                  what: str, side: str, severity: Callable[[NodeView], tuple[str, str]]) -> Iterator[Finding]:
        start = _first_lasting_crossing(walk, lambda v: past(v.kernel.cosines[input_cos]))
        if start is None:
            return
        end = walk[-1]
        start_cos, end_cos = start.kernel.cosines[input_cos], end.kernel.cosines[input_cos]
        level, reading = severity(end)
        yield self.finding(
            start, level,
            f"{what}: their outputs' cosine goes {side} {threshold:g} at {start.label} (depth {start.depth}, "
            f"{start_cos:.2f}) and stays there to {end.label} (depth {end.depth}, "
            f"{end_cos:.2f}; C map there: {_c_map(end)}){reading}",
            input_cos=input_cos, threshold=threshold, start_node=start.name, start_depth=start.depth,
            start_cos=start_cos, end_node=end.name, end_depth=end.depth, end_cos=end_cos,
            kernel=end.kernel.to_dict(), kernel_slope=end.kernel.slope,
        )


def offset_share(view: NodeView) -> float | None:
    """The share of a value's energy that every sample shares (its mean and per-feature offsets),
    from the main probe's split of the variance."""
    stats = view.stats
    if stats is None or stats.sample_std is None or stats.offset_std is None:
        return None
    shared = stats.mean ** 2 + stats.offset_std ** 2
    total = shared + stats.sample_std ** 2
    return shared / total if total > 0 else None


def input_dependent_cosine(view: NodeView) -> float | None:
    """The cosine of orthogonal inputs' outputs without the part they share: an output is
    offset + signal, so its cosine is about f + (1 - f) c, f the offset's share of the energy.
    None where the signal is lost in float rounding (nothing is left to compare)."""
    share, cosine = offset_share(view), view.kernel.cosines[0.0]
    if share is None or share >= 1 or not view.stats.signal_resolved():
        return None
    return (cosine - share) / (1 - share)


def _c_map(view: NodeView) -> str:
    return ", ".join(f"{c:g} -> {value:.2f}" for c, value in view.kernel.cosines.items())

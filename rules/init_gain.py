"""IL601 init-gain-mismatch."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
from initlint.rules._models import gain_init, mlp

from initlint import ops
from initlint.drift import outside
from initlint.graph import OUTPUT, NodeView, SignalGraph
from initlint.rule import Example, Finding, Rule
from initlint.stats import NodeStats

MAX_SHIFT = 0.5
"""Largest |mean| of a block's pre-activation, over its rms, for the gain to set the block's
factor. Beyond it a shared offset does (a bias of -1 keeps a ReLU off for 96 % of inputs, as in
IL202's example: 0.86); well-initialised and default-init stacks stay under 0.27."""

_LISTED = 4
"""Layers named in a message; the finding's data lists them all."""


def default_relu_one_hidden() -> nn.Module:
    """One hidden Linear(64, 64) -> ReLU and a head, PyTorch's default init: the block keeps 0.41x
    the std, which IL101 does not flag in so shallow a net."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def default_tanh_mlp() -> nn.Module:
    """Four Linear -> Tanh layers with PyTorch's default init (gain 1/sqrt(3)): ~0.5x a layer."""
    return mlp(4, 64, nn.Tanh)


def default_relu_normed_mlp() -> nn.Module:
    """Three Linear -> ReLU -> LayerNorm blocks and a head with PyTorch's default init: each
    block keeps 0.41x the std, and the LayerNorm after it restores the scale every time (the
    layout of BERT's masked-LM head transform, Linear -> GELU -> LayerNorm)."""
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.LayerNorm(64)) for _ in range(3)]
    return nn.Sequential(*blocks, nn.Linear(64, 10))


def kaiming_relu_mlp() -> nn.Module:
    """Twelve Linear -> ReLU layers with the ReLU gain sqrt(2) on fan-in: the second moment holds."""
    return mlp(12, 64, nn.ReLU, gain_init(2**0.5))


def xavier_tanh_mlp() -> nn.Module:
    """Six Linear -> Tanh layers with Xavier gain 1.1: the stack settles at a stable std."""
    return mlp(6, 64, nn.Tanh, gain_init(1.1))


def _second_moment(stats: NodeStats) -> float:
    """E[x^2]: what a following layer's output variance is proportional to (He et al., 2015)."""
    return stats.mean**2 + stats.std**2


@dataclass(frozen=True)
class _Block:
    """A weighted layer and the activation it feeds, on the main path."""

    layer: NodeView
    activation: NodeView
    gain: float
    """The weights' own gain: the layer's across-sample std over its input's (sqrt(fan_in) * std(W))."""
    factor: float
    """How much the block scales the second moment the next layer sees, in std, bias left out."""

    @property
    def needed_gain(self) -> float:
        """The gain that gives ``factor`` 1: exact for ReLU-like (positively homogeneous)
        activations, first-order for the others."""
        return self.gain / self.factor


def _blocks(graph: SignalGraph) -> list[_Block]:
    """Weighted layers of the body that feed exactly one activation on the main path, in order,
    where the weights' gain is what sets the block's factor. The head is left out: it sets the
    scale once (BERT's pooler, a Linear of std 0.02 into a tanh, reads its input nearly linearly)."""
    on_path = set(graph.main_path)
    blocks = []
    for layer in graph.body():
        if "weighted" not in layer.roles:
            continue
        users = graph.through_plumbing(layer.name, "users")
        if len(users) != 1 or users[0].name not in on_path:
            continue
        activation, source = users[0], graph.view(layer.inputs[0])
        if "activation" not in activation.roles or OUTPUT in activation.roles or activation.stats is None:
            continue
        if source.stats is None or not source.stats.signal_resolved() or not layer.stats.sample_std:
            continue
        gain = layer.stats.sample_std / source.stats.sample_std
        pre = _second_moment(layer.stats)
        shifted = abs(layer.stats.mean) > MAX_SHIFT * math.sqrt(pre)
        seen = _as_the_next_layer_sees_it(graph, activation)
        if seen.stats.sample_std is None or abs(seen.stats.mean) > seen.stats.sample_std:
            continue  # a constant dominates what it passes on (a sigmoid's 0.5): the next bias's job
        if graph.normalized_before_nonlinearity(seen.name):
            continue  # a norm cancels the scale before it can compound (BERT's MLM head transform)
        if pre > 0 and not shifted and _second_moment(seen.stats) > 0:
            factor = gain * math.sqrt(_second_moment(seen.stats) / pre)
            blocks.append(_Block(layer, activation, gain, factor))
    return blocks


def _as_the_next_layer_sees_it(graph: SignalGraph, activation: NodeView) -> NodeView:
    """The activation's output after the constant scales and shifts applied to it: a renorm
    node (``initlint fix``), NF-nets' ``act(x) * gamma``. They are part of the block."""
    view = activation
    while True:
        users = graph.through_plumbing(view.name, "users")
        if len(users) != 1 or users[0].stats is None:
            return view
        user = users[0]
        constant_operands = all(n == view.name or n not in graph.input_dependent for n in user.inputs)
        if not (user.kind.name == "renorm" or (user.kind.family in (ops.MUL, ops.ADD) and constant_operands)):
            return view
        view = user


def _calculate_gain(activation: str) -> float | None:
    """``torch.nn.init.calculate_gain`` where it knows the activation (leaky_relu: default slope)."""
    try:
        return nn.init.calculate_gain(activation)
    except ValueError:
        return None


class InitGainMismatch(Rule):
    """A weighted layer's init gain does not match the activation after it.

    What it does:
    For each block on the main path made of a weighted layer (Linear, Conv) and the activation
    it feeds (the network's output excepted), measures how much the block scales the second
    moment E[x^2] that the next layer sees: the weights' own gain (the layer's across-sample std
    over its input's, which is sqrt(fan_in) * std(W) and leaves the bias out) times the
    activation's second-moment ratio, E[f(y)^2] / E[y^2]. That factor is 1 for a well-chosen
    gain: Kaiming's condition for a ReLU, the stable point of a tanh stack. A block whose
    pre-activation a shared offset shifts by more than half its rms is left out: there the bias
    sets the factor, not the gain (a bias that keeps a ReLU off is IL202's case). So is one
    whose output a constant dominates (a sigmoid's mean of 0.5 exceeds its across-sample std):
    the next layer's bias absorbs it, and IL101 judges such stacks. So is one whose output
    reaches a normalization layer before any other nonlinearity (BERT's masked-LM head,
    Linear -> GELU -> LayerNorm; Conv -> ReLU -> Conv -> BatchNorm): the norm cancels its scale. Constant scales and shifts
    applied to the activation (a renorm node, NF-nets' ``act(x) * gamma``) count as part of the
    block. Per kind of
    activation, takes the median factor over the deeper half of its blocks, where a stack has
    settled (a tanh fed the unit-variance input first compresses it by ~0.65 at any gain), and
    flags it outside [1/band, band]. The finding names the layers outside the band and gives
    the gain that would hold the second moment (the weights' gain over the factor: exact for
    ReLU-like activations, first-order for others; for tanh, the small-signal gain ~1 rather
    than ``calculate_gain``'s 5/3) beside ``torch.nn.init.calculate_gain``.

    This is the per-layer cause of what IL101 sees over the whole body, and it reads a
    different quantity: the second moment with the bias left out (the mean-field length map),
    not the input-dependent std. So it names the layers and the gain, fires on a net with one
    hidden layer, and stays quiet on a sigmoid stack whose signal fades while its mean holds
    (IL101's case) and on a tanh stack pinned at +-1 (IL201's). The bias is left out because it
    adds the same constants for every input: in a deep ReLU MLP with PyTorch's default init it
    holds the second moment up while the input's part dies.

    Why is this bad?
    Every block multiplies the scale by its factor, so a mismatch compounds with depth: a
    factor of 0.41 (default init before a ReLU) leaves 1/2.4 of the std per layer, 1/6 after two
    layers and ~1/8000 after ten. The activations then work in the wrong regime (a tanh
    linear, a GELU close to the identity) and the gradients scale the same way.

    Example:
    ``nn.Linear(64, 64)`` with PyTorch's default init (``kaiming_uniform_`` with ``a=sqrt(5)``:
    weight std 1/sqrt(3 * fan_in), gain 0.58) into ``nn.ReLU()``, which needs gain sqrt(2):
    each block keeps 0.41x the std.

    Fix:
    Re-initialize the named layers with the reported gain:
    ``nn.init.kaiming_normal_(w, nonlinearity="relu")`` for ReLU,
    ``nn.init.xavier_normal_(w, gain=...)`` with a gain from the reported one up to
    ``calculate_gain("tanh")`` for tanh, ``nn.init.normal_(w, std=gain / fan_in ** 0.5)`` in
    general; or put a normalization layer between the layer and its activation.

    Thresholds: ``band`` (1.5) is the allowed factor, in std, either way: between sqrt(2)
    (Xavier's gain 1 before a ReLU) and sqrt(3) (PyTorch's default gain 1/sqrt(3) before a
    tanh), the two common mismatches. Measured over five seeds: Kaiming ReLU 0.92 to 1.13,
    ELU, Mish and Softplus with the ReLU gain 0.87 to 1.22, tanh stacks of gain 1 to 1.1
    0.75 to 0.95, SiLU and Hardswish with the ReLU gain 0.71 to 0.89; PyTorch's default init
    0.37 to 0.41 before a ReLU, 0.53 to 0.58 before a tanh, 0.28 to 0.30 before a GELU. Xavier
    before a ReLU measures 0.65 to 0.80, on the edge: lower ``band`` to 1.3 to flag it
    reliably, with the milder SiLU and Hardswish cases (IL101 reports it once it compounds past
    its band, after ~4 layers).
    """

    code = "IL601"
    name = "init-gain-mismatch"
    thresholds = {"band": 1.5}
    needs_structure = True
    flagged = [Example(default_relu_one_hidden), Example(default_tanh_mlp)]
    clean = [Example(kaiming_relu_mlp), Example(xavier_tanh_mlp), Example(default_relu_normed_mlp)]

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        band = self.limits["band"]
        by_activation: dict[str, list[_Block]] = {}
        for block in _blocks(graph):
            by_activation.setdefault(block.activation.op_name, []).append(block)
        for activation, blocks in by_activation.items():
            settled = blocks[len(blocks) // 2:]
            factor = statistics.median(b.factor for b in settled)
            if not outside(factor, band):
                continue
            off = [b for b in blocks if outside(b.factor, band)]
            gain = statistics.median(b.gain for b in settled)
            needed = statistics.median(b.needed_gain for b in settled)
            reference = _calculate_gain(activation)
            named = ", ".join(f"{b.layer.label} ({b.factor:.2g}x)" for b in off[:_LISTED])
            more = f" and {len(off) - _LISTED} more" if len(off) > _LISTED else ""
            versus = f" (torch.nn.init.calculate_gain({activation!r}) = {reference:.3g})" if reference else ""
            yield self.finding(
                off[0].layer, "warning",
                f"the weighted layers before a {activation} on the main path "
                f"{'shrink' if factor < 1 else 'grow'} the second moment the next layer sees by a "
                f"median {factor:.3g}x in std per block (deeper {len(settled)} of {len(blocks)} "
                f"blocks; band {band:g}x); outside the band: {named}{more}. The weights' gain is "
                f"{gain:.3g} where this {activation} needs about {needed:.3g}{versus}: "
                f"re-initialize them with std = {needed:.2g} / sqrt(fan_in)",
                band=band, activation=activation, median_factor=factor, median_gain=gain,
                needed_gain=needed, calculate_gain=reference, settled_blocks=len(settled),
                layers=[
                    {"node": b.layer.name, "module": b.layer.module, "factor": b.factor,
                     "gain": b.gain, "needed_gain": b.needed_gain}
                    for b in blocks
                ],
            )

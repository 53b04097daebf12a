"""Fold a renorm plan into the weights of a copy of the user's model: same class, same keys.

A constant pair (a, c) after a node folds into the Linear or ConvNd layers that consume it,
through what commutes with it (plumbing, flattens and averages; max pools for a > 0;
ReLU-like activations, and products with a factor that does not carry it, for a scale alone):
W' = a W and b' = b + c * sum of W over its inputs, in each of those layers.
That is exact for Linear and unpadded convolutions; with zero padding, border outputs see
fewer inputs and the bias is off there, so the error is measured, never hidden. A weighted
layer's own constants rescale its weight and bias, and so do the constants on an activation's
input (kernel shaping) when that layer alone feeds it. What cannot be folded is listed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn

from initlint import ops
from initlint.renorm import Renorm
from initlint.rewrite import rescale_weights
from initlint.trace import MODULE

_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class FoldResult:
    model: nn.Module
    unfolded: list[dict] = field(default_factory=list)
    """Each constant pair that could not be folded, with the reason."""


_AVERAGES = frozenset({"avg_pool", "adaptive_avg_pool", "mean"})
"""Linear in their input: ``avg(a x + c) = a avg(x) + c``."""
_POSITIVELY_HOMOGENEOUS = frozenset({"relu", "leaky_relu", "prelu"})
"""``f(a x) = a f(x)`` for a > 0: a scale passes, a shift does not."""


def _passes(kind: ops.OpKind, scale: float, shift: float) -> bool:
    """Whether ``kind`` commutes with ``x -> scale * x + shift``, so the constants can go on
    past it to the layer after: plumbing and averages always, a max (pool) for a positive scale
    (max(a x + c) = a max(x) + c), a ReLU-like activation for a positive scale alone."""
    if kind.family in (ops.STRUCTURAL, ops.DROPOUT) or kind.name in _AVERAGES:
        return True
    if kind.name == "max_pool":
        return scale > 0
    return kind.name in _POSITIVELY_HOMOGENEOUS and scale > 0 and shift == 0


def _consumers(node: fx.Node, root: nn.Module, scale: float, shift: float) -> list[fx.Node] | None:
    """The Linear/Conv calls that together consume everything computed from ``node``, looking
    through what the constants pass (``_passes``), or None when one path reaches something
    else. Several consumers each take the constants (W (a x + c) = a W x + W c for each); a
    scale alone also passes a product with a factor that does not carry it ((a x) g = a (x g):
    a squeeze-excitation gate multiplying its input, whose own path is folded into the layer
    that starts it). A product of two carrying factors (a^2 x g) is refused, and so is a layer
    that is also called on something that does not carry the constants."""
    consumers: list[fx.Node] = []
    carrying, frontier, products = {node}, [node], []
    while frontier:
        current = frontier.pop()
        if not current.users:
            return None
        for user in current.users:
            if user in carrying or user in consumers:
                continue
            if user.op == "call_module" and isinstance(root.get_submodule(user.target), _FOLDABLE):
                consumers.append(user)
                continue
            if _scales_a_product(user, root, current, scale, shift):
                products.append((user, current))
            elif not (_passes(ops.node_kind(user, root), scale, shift) and
                      all(arg is current for arg in user.all_input_nodes)):
                return None
            carrying.add(user)
            frontier.append(user)
    if any(f in carrying for product, factor in products for f in product.all_input_nodes if f is not factor):
        return None
    called = {c.target for c in consumers}
    if any(n.op == "call_module" and n.target in called and n not in consumers for n in node.graph.nodes):
        return None
    return consumers or None


def _scales_a_product(user: fx.Node, root: nn.Module, current: fx.Node, scale: float, shift: float) -> bool:
    """Whether ``user`` is ``current * other`` with ``current`` carrying a scale alone: the
    scale then passes on to the product, provided ``other`` does not carry it (checked once
    every carrying node is known)."""
    if shift or ops.node_kind(user, root).family != ops.MUL or len(user.args) != 2 or user.kwargs:
        return False
    return [arg is current for arg in user.args].count(True) == 1


def _producer(node: fx.Node, root: nn.Module) -> fx.Node | None:
    """The Linear/Conv call whose output only ``node`` reads, looking back through plumbing."""
    current = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    while current is not None and len(current.users) == 1:
        if current.op == "call_module" and isinstance(root.get_submodule(current.target), _FOLDABLE):
            return current
        if ops.node_kind(current, root).family not in (ops.STRUCTURAL, ops.DROPOUT):
            return None
        current = current.args[0] if current.args and isinstance(current.args[0], fx.Node) else None
    return None


def _rescaled_layer(renorm: Renorm, node: fx.Node, graph_module: fx.GraphModule) -> str | None:
    """The path of the layer whose own weights take ``renorm``: a weighted site's layer, or
    the layer that alone feeds an activation's input constants; None for a fold forward."""
    if renorm.site == "weighted":
        return node.meta[MODULE]
    if renorm.placement == "before":
        producer = _producer(node, graph_module)
        return producer.meta[MODULE] if producer is not None else ""
    return None


@torch.no_grad()
def _fold_into(layer: nn.Module, scale: float, shift: float) -> None:
    """layer(scale * x + shift) == layer'(x), up to zero-padded borders."""
    input_sum = layer.weight.sum(dim=tuple(range(1, layer.weight.dim())))
    if shift:
        layer.bias.add_(shift * input_sum)
    layer.weight.mul_(scale)


def fold_plan(model: nn.Module, graph_module: fx.GraphModule, plan: list[Renorm]) -> FoldResult:
    """A deep copy of ``model`` with every foldable constant pushed into its weights."""
    folded = copy.deepcopy(model)
    result = FoldResult(folded)
    nodes = {n.name: n for n in graph_module.graph.nodes}
    # Rescales of a layer's own output first, in plan order: y -> a2 (a1 y + c1) + c2 does not
    # commute. Then folds into inputs, latest first: of two constants that reach the same layer
    # (an activation's, then a pool's), the one nearer the layer must be folded first, since
    # layer(a2 (a1 x + c1) + c2) folds as layer' = layer(a2 y + c2), then layer'(a1 x + c1). A
    # layer's own rescale commutes with the folds into it: its input sum is taken from the
    # weights as they are then.
    forward, unfolded = [], {}
    for index, renorm in enumerate(plan):
        path = _rescaled_layer(renorm, nodes[renorm.node], graph_module)
        if path is None:
            forward.append((index, renorm))
        elif not path:
            unfolded[index] = "no Linear or Conv alone feeds the activation"
        elif renorm.bias and getattr(folded.get_submodule(path), "bias", None) is None:
            unfolded[index] = f"its shift needs a bias, and {path} has none"
        else:
            rescale_weights(folded.get_submodule(path), renorm)
    for index, renorm in reversed(forward):
        node = nodes[renorm.node]
        consumers = _consumers(node, graph_module, renorm.scale, renorm.bias)
        layers = [folded.get_submodule(c.meta[MODULE]) for c in consumers or ()]
        missing = [c.meta[MODULE] for c, layer in zip(consumers or (), layers) if getattr(layer, "bias", None) is None]
        if not layers:
            reason = "no Linear or Conv consumes it through operations the constants pass"
        elif renorm.bias and missing:
            reason = f"its shift needs a bias, and {', '.join(missing)} has none"
        else:
            for layer in layers:
                _fold_into(layer, renorm.scale, renorm.bias)
            continue
        unfolded[index] = reason
    result.unfolded = [{**plan[index].to_dict(), "reason": unfolded[index]} for index in sorted(unfolded)]
    return result

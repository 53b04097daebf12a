"""Fold a renorm plan into the weights of a copy of the user's model: same class, same keys.

A positive scale alone after a ReLU-like activation folds into the Linear or ConvNd layer, or
the affine weight and bias of the normalization layer, that alone feeds it (relu(a z) =
a relu(z)). Any other constant pair (a, c) after a node folds into
the Linear or ConvNd layers that consume it, through what commutes with it (plumbing, flattens
and averages; max pools for a > 0; ReLU-like activations, and products with a factor that does
not carry it, for a scale alone): W' = a W and b' = b + c * sum of W over its inputs, in each
of those layers. A matrix product with a weight of the model is such a layer too (Hugging
Face's ``Conv1D`` is ``addmm(b, x, W)`` with W laid out inputs first), unless that weight is
also read elsewhere (tied), and so is a transposed conv, but for a shift when it has a stride
(its outputs read a constant input through different numbers of taps). A weight_norm layer
takes its scales through its magnitude g (``initlint.weight_scale``).
That is exact for Linear and unpadded convolutions; with zero padding, border outputs see
fewer inputs and the bias is off there, so the error is measured, never hidden. A weighted
layer's own constants rescale its weight and bias, and so do the constants on an activation's
input (kernel shaping) when that layer alone feeds it. What cannot be folded is listed.
Last, the scale at each ReLU-like activation between Linear/Conv layers in a residual branch is
shared between them so that their gains agree (``balance``): the same function, steadier SGD
steps.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.fx as fx
import torch.nn as nn

from initlint import ops
from initlint.graph import SignalGraph
from initlint.module_calls import op_name
from initlint.probe import CARRIES_TENSOR
from initlint.renorm import Renorm
from initlint.rewrite import rescale_weights
from initlint.safe_code import ORIGINAL_PATH
from initlint.tied import TiedParameters, parameter_at
from initlint.weight_scale import current_weight, scale_parameter
from initlint.trace import MODULE

_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_OWN_WEIGHT = " (with a weight a constant can scale: not tied to another layer, nor spectral-normalized)"
"""What a layer must have to take a folded constant, as a refusal names it."""
_PRODUCTS = {"addmm": (1, 2, 0, 0), "mm": (0, 1, None, 0), "matmul": (0, 1, None, 0), "linear": (0, 1, 2, 1)}
"""Products with a weight: the positions of x, W and b, and W's input dim (``addmm(b, x, W)``
is ``x @ W + b``, ``linear(x, W, b)`` is ``x @ W.T + b``)."""


@dataclass(frozen=True)
class _Weights:
    """The parameters of a layer that constants fold into, by path in the user's model."""

    weight: str
    """The parameter that scales the weight: the weight, or weight_norm's g."""
    bias: str | None
    input_dims: tuple[int, ...]
    """The weight's dims that run over the layer's inputs: 1.. for Linear/Conv, 0 for x @ W."""
    layer: str | None = None
    """The layer's path when ``weight`` is not the weight itself."""
    spreads_shifts: bool = False
    """A transposed conv with a stride (or groups): a constant input reaches its outputs through
    different numbers of taps, position by position, so no bias carries an input shift."""

    @property
    def shown(self) -> str:
        """The weight's path, as a message names it."""
        return f"{self.layer}.weight" if self.layer else self.weight

    def current(self, model: nn.Module) -> torch.Tensor:
        """The weight itself, as the layer computes with it now."""
        return current_weight(model.get_submodule(self.layer)) if self.layer else model.get_parameter(self.weight)


@dataclass
class FoldResult:
    model: nn.Module
    unfolded: list[dict] = field(default_factory=list)
    """Each constant pair that could not be folded, with the reason."""
    balanced: int = 0
    """ReLU-like activations whose scale was shared between the layers around them (``balance``)."""


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


def _consumers(node: fx.Node, root: nn.Module, tied: TiedParameters, scale: float,
               shift: float) -> list[_Weights] | None:
    """The weights of the Linear/Conv calls (or products with a weight) that together consume
    everything computed from ``node``, looking through what the constants pass (``_passes``),
    or None when one path reaches something else. Several consumers each take the constants
    (W (a x + c) = a W x + W c for each); a scale alone also passes a product with a factor that
    does not carry it ((a x) g = a (x g):
    a squeeze-excitation gate multiplying its input, whose own path is folded into the layer
    that starts it). A product of two carrying factors (a^2 x g) is refused, and so is a layer
    that is also called on something that does not carry the constants."""
    consumers: list[_Weights] = []
    carrying, frontier, products, reached = {node}, [node], [], set()
    while frontier:
        current = frontier.pop()
        if not current.users:
            return None
        for user in current.users:
            if user in carrying or user in reached:
                continue
            if (weights := _weights_of(user, root, tied, data=current)) is not None:
                if weights not in consumers:  # a layer called twice on what carries them: once
                    consumers.append(weights)
                reached.add(user)
                continue
            if _scales_a_product(user, root, current, scale, shift):
                products.append((user, current))
            elif not (_passes(ops.node_kind(user, root), scale, shift) and _reads_values_of(user, current)):
                return None
            carrying.add(user)
            frontier.append(user)
    if any(f in carrying for product, factor in products for f in product.all_input_nodes if f is not factor):
        return None
    if _called_elsewhere(reached, node.graph):
        return None
    return consumers or None


def _reads_values_of(user: fx.Node, current: fx.Node) -> bool:
    """Whether ``current`` is the one input whose values ``user`` reads: sizes
    (``x.view(b, c, 1, 1)``) and shape templates (``y.expand_as(x)``) are no values."""
    return all(arg is current or not arg.meta.get(CARRIES_TENSOR, True) or ops.reads_shape_only(user, arg)
               for arg in user.all_input_nodes)


def _called_elsewhere(calls: set[fx.Node], graph: fx.Graph) -> bool:
    """Whether a layer called at ``calls`` is also called at another node of ``graph``: a
    constant folded into its weights would change those calls too."""
    layers = {c.target for c in calls if c.op == "call_module"}
    return any(n.op == "call_module" and n.target in layers and n not in calls for n in graph.nodes)


def _scales_a_product(user: fx.Node, root: nn.Module, current: fx.Node, scale: float, shift: float) -> bool:
    """Whether ``user`` is ``current * other`` with ``current`` carrying a scale alone: the
    scale then passes on to the product, provided ``other`` does not carry it (checked once
    every carrying node is known)."""
    if shift or ops.node_kind(user, root).family != ops.MUL or len(user.args) != 2 or user.kwargs:
        return False
    return [arg is current for arg in user.args].count(True) == 1


def _weights_of(node: fx.Node, root: nn.Module, tied: TiedParameters,
                data: fx.Node | None = None) -> _Weights | None:
    """The weights of ``node`` when it is a Linear/Conv call, or a product of ``data`` (when
    given) with a weight that nothing else reads; else None."""
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        name = scale_parameter(module) if isinstance(module, _FOLDABLE) else None
        if name is None or tied.includes(module.get_parameter(name)):
            return None
        dims = current_weight(module).dim()
        if isinstance(module, nn.modules.conv._ConvTransposeNd):  # (inputs, outputs / groups, kernel...)
            spreads = any(s > 1 for s in module.stride) or module.groups > 1
            return replace(_layer_weights(node, module, (0, *range(2, dims)), name), spreads_shifts=spreads)
        return _layer_weights(node, module, tuple(range(1, dims)), name)
    if node.op != "call_function" or op_name(node) not in _PRODUCTS or node.kwargs:
        return None
    *positions, input_dim = _PRODUCTS[op_name(node)]
    x, weight, bias = (node.args[i] if i is not None and i < len(node.args) else None for i in positions)
    if (data is not None and x is not data) or not _is_own_parameter(weight, root, tied, dims=2) or \
            (bias is not None and not _is_own_parameter(bias, root, tied, dims=1)):
        return None
    return _Weights(_path(weight), _path(bias) if bias is not None else None, (input_dim,))


def _layer_weights(node: fx.Node, module: nn.Module, input_dims: tuple[int, ...], scale: str = "weight") -> _Weights:
    """The weight (``scale``, the parameter that scales it) and bias (where it has one) of the
    module that ``node`` calls."""
    path = node.meta[MODULE]
    return _Weights(f"{path}.{scale}", f"{path}.bias" if module.bias is not None else None, input_dims,
                    layer=path if scale != "weight" else None)


def _path(get_attr: fx.Node) -> str:
    return get_attr.meta.get(ORIGINAL_PATH, get_attr.target)


def _is_own_parameter(node: object, root: nn.Module, tied: TiedParameters, dims: int) -> bool:
    """Whether ``node`` reads a Parameter of ``dims`` dims that no other node or layer reads."""
    if not isinstance(node, fx.Node) or node.op != "get_attr" or len(node.users) != 1:
        return False
    parameter = parameter_at(root, node.target)
    return parameter is not None and parameter.dim() == dims and not tied.includes(parameter)


_AFFINE_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d,
                 nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm)
"""Normalization layers whose output is normalized(x) * weight + bias, in training and in
evaluation alike (their exact classes: a subclass such as timm's BatchNormAct2d may apply more)."""


def _affine_of(node: fx.Node, root: nn.Module, tied: TiedParameters) -> _Weights | None:
    """The affine weight and bias of a normalization layer call, which take a constant after it
    exactly; None for anything else, or a norm without its own affine weight."""
    if node.op != "call_module":
        return None
    module = root.get_submodule(node.target)
    if type(module) not in _AFFINE_NORMS:
        return None
    weight = getattr(module, "weight", None)
    if not isinstance(weight, nn.Parameter) or tied.includes(weight):
        return None
    return _layer_weights(node, module, ())


def _producer(node: fx.Node, root: nn.Module, tied: TiedParameters) -> _Weights | None:
    """The weights of the Linear/Conv call (or product with a weight, or affine normalization
    layer: BatchNorm -> ReLU) whose output only ``node`` reads, looking back through plumbing;
    None when that layer is also called elsewhere."""
    current = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    while current is not None and len(current.users) == 1:
        if (weights := _weights_of(current, root, tied) or _affine_of(current, root, tied)) is not None:
            return None if _called_elsewhere({current}, node.graph) else weights
        if ops.node_kind(current, root).family not in (ops.STRUCTURAL, ops.DROPOUT):
            return None
        current = current.args[0] if current.args and isinstance(current.args[0], fx.Node) else None
    return None


def _producer_of_scale(node: fx.Node, renorm: Renorm, root: nn.Module, tied: TiedParameters) -> _Weights | None:
    """The layer that alone feeds a ReLU-like ``node`` whose constant has a positive scale:
    relu(a z) = a relu(z), so the scale folds into that layer (a shift goes on into the layers
    after the activation), and those layers read what they read in the renorm-node model.
    Folded into them instead, each constant would shrink their effective step under SGD by its
    square and leave the head that reads the last one larger (benchmarks/train_digits.py, SGD, 10 seeds: relu x30 0.51
    folded forward, 0.69 folded back; cnn relu 0.43 and 0.48; SE-CNN 0.62 and 0.67)."""
    if not renorm.scale > 0 or ops.node_kind(node, root).name not in _POSITIVELY_HOMOGENEOUS:
        return None
    return _producer(node, root, tied)


@torch.no_grad()
def _fold_into(model: nn.Module, weights: _Weights, scale: float, shift: float) -> None:
    """layer(scale * x + shift) == layer'(x), up to zero-padded borders."""
    if shift:
        model.get_parameter(weights.bias).add_(shift * weights.current(model).sum(dim=weights.input_dims))
    model.get_parameter(weights.weight).mul_(scale)


def _rescale_layer(model: nn.Module, path: str, renorm: Renorm) -> None:
    """The layer at ``path`` gives ``renorm``'s scale and shift of its output."""
    rescale_weights(model.get_submodule(path), renorm)


@torch.no_grad()
def _rescale_output(model: nn.Module, weights: _Weights, scale: float, shift: float) -> None:
    """layer'(x) == scale * layer(x) + shift."""
    model.get_parameter(weights.weight).mul_(scale)
    if weights.bias is not None:
        model.get_parameter(weights.bias).mul_(scale).add_(shift)


FoldStep = Callable[[nn.Module], None]
"""One fold, made in place on the copy of the model that is being folded."""


def fold_plan(model: nn.Module, graph_module: fx.GraphModule, graph: SignalGraph, plan: list[Renorm]) -> FoldResult:
    """A deep copy of ``model`` with every foldable constant pushed into its weights."""
    steps, unfolded = _fold_steps(model, graph_module, plan)
    folded = copy.deepcopy(model)
    for step in steps:
        step(folded)
    balanced = balance(folded, _junctions(graph_module, graph, TiedParameters(graph_module)))
    return FoldResult(folded, _described(plan, unfolded), balanced=balanced)


@dataclass(frozen=True)
class _Junction:
    """A ReLU-like activation that one Linear/Conv alone feeds and that only the weights of
    ``consumers`` read (through what a positive scale passes): dividing the producer's weight
    and bias by t and multiplying the consumers' weights by t leaves the model's function as it
    is (relu(z / t) = relu(z) / t)."""

    producer: _Weights
    consumers: tuple[_Weights, ...]


def _junctions(graph_module: fx.GraphModule, graph: SignalGraph, tied: TiedParameters) -> list[_Junction]:
    """Every junction (``_Junction``) inside a residual branch. There the branch's share of the
    stream makes its last layer small and the ReLU's scale makes the layer before it large. In
    a plain chain every layer's output is at std 1 already, and moving each ReLU's scale toward
    equal gains cost the plain ReLU CNN and the SE-CNN under SGD (benchmarks/train_digits.py, 10
    seeds: cnn relu x16 0.68 -> 0.41, SE-CNN 0.75 -> 0.71)."""
    found = []
    for node in graph_module.graph.nodes:
        if node.op == "placeholder" or ops.node_kind(node, graph_module).name not in _POSITIVELY_HOMOGENEOUS \
                or not graph.in_residual_branch(node.name):
            continue
        producer = _producer(node, graph_module, tied)
        consumers = _consumers(node, graph_module, tied, scale=1.0, shift=0.0)
        if producer is not None and producer.input_dims and consumers and producer not in consumers:
            found.append(_Junction(producer, tuple(consumers)))
    return found


@torch.no_grad()
def balance(model: nn.Module, junctions: list[_Junction]) -> int:
    """Share each junction's scale between the layers around it so that their gains agree: the
    mean squared norm of the producer's output units (rows of weights, with the bias) equals
    that of the consumers' (rows of weights), so an SGD step on either side moves the output
    about as much (the step on the layer before reaches it through the layers after, scaled by
    their gain, and theirs by the size of what they read). Constants piled on one side leave a
    small layer whose SGD steps are large beside its weights (a residual branch's last conv at
    0.37 of its norm, the conv before it at 3x: benchmarks/train_digits.py, resnet x24 folded,
    SGD, NaN on 8 of 10 seeds, balanced on 2). Every factor is taken from the folded weights
    before any move, so each activation's output moves by its own junction's factor alone:
    balanced jointly, a chain's factors compound (a 30-layer ReLU stack's signal fell to 0.05x
    inside, IL101). A junction with nothing on one side (a branch zeroed on purpose) is left as
    it is. Returns how many junctions moved."""
    def squared(path: str | None) -> float:  # weight_norm's g has its weight's norm
        return 0.0 if path is None else float(model.get_parameter(path).double().square().sum())

    def units(weights: _Weights) -> int:
        shape = weights.current(model).shape
        return math.prod(shape) // math.prod(shape[d] for d in weights.input_dims)

    moves = []
    for junction in junctions:
        into = (squared(junction.producer.weight) + squared(junction.producer.bias)) / units(junction.producer)
        out = sum(squared(c.weight) for c in junction.consumers) / sum(units(c) for c in junction.consumers)
        if into > 0 and out > 0:
            moves.append((junction, (into / out) ** 0.25))
    for junction, factor in moves:
        for path in (junction.producer.weight, junction.producer.bias):
            if path is not None:
                model.get_parameter(path).div_(factor)
        for consumer in junction.consumers:
            model.get_parameter(consumer.weight).mul_(factor)
    return len(moves)


def unfolded_constants(model: nn.Module, graph_module: fx.GraphModule, plan: list[Renorm]) -> list[dict]:
    """The constants of ``plan`` that no exact fold carries, with the reason: what
    ``fold_plan`` would list, found from the model's structure without copying its weights."""
    return _described(plan, _fold_steps(model, graph_module, plan)[1])


def _described(plan: list[Renorm], unfolded: dict[int, str]) -> list[dict]:
    return [{**plan[index].to_dict(), "reason": unfolded[index]} for index in sorted(unfolded)]


def _fold_steps(model: nn.Module, graph_module: fx.GraphModule, plan: list[Renorm]) -> tuple[list[FoldStep], dict[int, str]]:
    """The folds that carry ``plan`` into ``model``'s weights, in the order they must be made,
    and why each other constant (by its index in ``plan``) does not fold. Where a constant goes
    depends on the graph and on which layers have a bias, never on weight values."""
    nodes = {n.name: n for n in graph_module.graph.nodes}
    tied = TiedParameters(graph_module)
    # Rescales of a layer's own output first, in plan order: y -> a2 (a1 y + c1) + c2 does not
    # commute. Then folds into inputs, latest first: of two constants that reach the same layer
    # (an activation's, then a pool's), the one nearer the layer must be folded first, since
    # layer(a2 (a1 x + c1) + c2) folds as layer' = layer(a2 y + c2), then layer'(a1 x + c1). A
    # layer's own rescale commutes with the folds into it: its input sum is taken from the
    # weights as they are then.
    steps: list[FoldStep] = []
    forward, unfolded = [], {}
    for index, renorm in enumerate(plan):
        node = nodes[renorm.node]
        if renorm.site == "weighted":
            path = node.meta[MODULE]
            if renorm.bias and getattr(model.get_submodule(path), "bias", None) is None:
                unfolded[index] = f"its shift needs a bias, and {path} has none"
            else:
                steps.append(functools.partial(_rescale_layer, path=path, renorm=renorm))
        elif renorm.placement == "before":
            producer = _producer(node, graph_module, tied)
            if producer is None:
                unfolded[index] = f"no Linear or Conv alone feeds the activation{_OWN_WEIGHT}"
            elif renorm.bias and producer.bias is None:
                unfolded[index] = f"its shift needs a bias, and {producer.shown} has none"
            else:
                steps.append(functools.partial(_rescale_output, weights=producer, scale=renorm.scale,
                                               shift=renorm.bias))
        else:
            forward.append((index, renorm))
    for index, renorm in reversed(forward):
        producer = _producer_of_scale(nodes[renorm.node], renorm, graph_module, tied)
        back = [] if producer is None else [
            functools.partial(_rescale_output, weights=producer, scale=renorm.scale, shift=0.0)]
        if back and not renorm.bias:
            steps += back
            continue
        scale = 1.0 if back else renorm.scale  # what goes on past the node
        consumers = _consumers(nodes[renorm.node], graph_module, tied, scale, renorm.bias) or []
        missing = [c.shown for c in consumers if c.bias is None]
        spreading = [c.shown for c in consumers if c.spreads_shifts]
        if not consumers:
            unfolded[index] = f"no Linear or Conv consumes it through operations the constants pass{_OWN_WEIGHT}"
        elif renorm.bias and missing:
            unfolded[index] = f"its shift needs a bias, and {', '.join(missing)} has none"
        elif renorm.bias and spreading:
            unfolded[index] = (f"its shift would reach the outputs of {', '.join(spreading)} unevenly (a transposed "
                               "conv with a stride sums a different number of taps at each position)")
        else:
            steps += back + [functools.partial(_fold_into, weights=weights, scale=scale, shift=renorm.bias)
                             for weights in consumers]
    return steps, unfolded

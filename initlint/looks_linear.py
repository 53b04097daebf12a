"""Looks-linear pairs: where the graph allows it, a ReLU-like activation between two Linear or
conv layers is made exactly linear at init by the directions of those layers, not by constants.

An activation whose odd part is linear, f(u) - f(-u) = k u (ReLU, GELU, SiLU, Softplus,
Hardswish, LeakyReLU), passes a pair of mirrored units (u, -u) on as (f(u), f(-u)), and a next
layer whose weights pair them as (B, -B) reads k B u: the block is linear at init, its C map is
the identity (C(0) = 0, C'(1) = 1) and its gradient passes whole, yet every unit is a ReLU that
training is free to use (Balduzzi et al. 2017, "looks-linear" initialization). The layer before
takes mirrored rows (and bias), the layer after paired columns; a layer between two such
activations takes both. Kernel shaping reaches a bounded C'(1) only by shifting a ReLU's input,
which a fold turns into a next layer that trains on inputs of mean ~2 (README, "Does the fix
train better?"); the pairs leave every layer's input as a plain ReLU's. On the digits MLPs of
width 128, 30 layers, 3 seeds (Adam / SGD), ``fix --fold``: ReLU 0.965 / 0.966 and GELU
0.970 / 0.974 with pairs, against 0.938 / 0.653 and 0.934 / 0.364 without, and LSUV's
0.947 / 0.669 and 0.935 / 0.272.

Only exact pairings are made: the layer before feeds the activation alone, the layer after
reads it alone (directly or through dropout; a conv's channels also through a flatten from dim 1
or an average over positions, which keep channel halves as halves, not through a max pool),
both are Linear or ungrouped conv layers whose directions the fix redraws (not shared, tied or
zero-initialized) and of even width, and neither is in a residual branch. A product with an
elementwise gate keeps the halves too when the gate's own layer can duplicate its rows, so that
both units of a pair take the same gate (squeeze-excitation, ``x * sigmoid(expand(...))``, its
layers 1x1 convs or Linear layers whose gate is reshaped and broadcast over positions): the
next layer reads (f(u) - f(-u)) g = k u g, centred, where an unpaired ReLU's output would carry
its mean through the gate into every later layer and into the head's pooled input (the
LSUV-degenerate SE-CNN folded, orthogonal inputs at cosine 0.986 there). SGD, 10 seeds: 0.754
unpaired through the gates, 0.852 paired (LSUV: 0.814); Adam 0.874 either way.

Pairs are drawn with "dks-scale" only, where a ReLU-like activation would otherwise get no
kernel shaping. Measured (README, "Does the fix train better?"): residual branches and renorm
nodes with pairs trained worse under SGD (residual CNN NaN, ReLU MLP as renorm nodes 0.96 ->
0.43, whose node constants multiply each layer's step where a fold puts them into the weights).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn

from initlint import ops
from initlint.directions import Pairing, takes_orthogonal_directions
from initlint.graph import GATE, SignalGraph, activation_module_of
from initlint.module_calls import op_name
from initlint.moments import in_float64, is_elementwise

_ODD_GRID = torch.linspace(0.05, 6.0, 120, dtype=torch.float64)
"""Where f(u) - f(-u) must be k u: six stds of the N(0, 1) pre-activation that a rescaled layer
gives, all but 2e-9 of its values. ReLU6's clip at 6 lies at the edge: its pairs are linear at
init, as ReLU's are, where unpaired and uncentred its 30-layer stack collapses (cosine 0.98)."""

_RESHAPES = frozenset({"view", "reshape", "flatten", "squeeze", "unsqueeze"})
_EXPANDS = frozenset({"expand", "expand_as"})
_BROADCASTS = _RESHAPES | _EXPANDS
"""Operators that move a vector of channels into place for a product without reordering it."""
_UNIT_WISE = (nn.Dropout, nn.Identity)
"""Modules between the activation and the next layer that keep any layer's units in their halves."""
_AVERAGE_POOLS = frozenset({"avg_pool", "adaptive_avg_pool"})
"""Pools (modules or functions, by ``ops`` kind) that keep a conv's channels in their halves."""


@dataclass(frozen=True)
class LooksLinear:
    layers: dict[str, Pairing] = field(default_factory=dict)
    """Pairing by weighted node name."""
    activations: frozenset[str] = frozenset()
    """The activations the pairs make linear at init: they need no kernel shaping."""


def odd_part_is_linear(module: nn.Module) -> bool:
    """Whether f(u) - f(-u) = k u with k > 0 for |u| <= 6, for an elementwise ``module``."""
    try:
        module = in_float64(module)
        with torch.no_grad():
            slope = (module(_ODD_GRID.clone()) - module(-_ODD_GRID)) / _ODD_GRID
    except Exception:
        return False
    return bool(slope.min() > 0) and bool(slope.max() - slope.min() <= 1e-6 * slope.mean())


def _pairable(node: object, root: fx.GraphModule, sites: dict[str, str], calls: Counter) -> bool:
    """A Linear or ungrouped conv whose directions the fix redraws, called once. Not a
    transposed conv: its weight holds its input channels first."""
    if not (isinstance(node, fx.Node) and node.op == "call_module" and sites.get(node.name) == "weighted"):
        return False
    layer = root.get_submodule(node.target)
    return (isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd))
            and not isinstance(layer, nn.modules.conv._ConvTransposeNd) and getattr(layer, "groups", 1) == 1
            and calls[node.target] == 1 and takes_orthogonal_directions(layer))


def _keeps_halves(node: fx.Node, root: fx.GraphModule, graph: SignalGraph, channels: bool) -> bool:
    """Whether ``node`` keeps the units in their halves: any layer's through dropout, a conv's
    channels (``channels``) also through a flatten from dim 1 (function or module, each
    channel's positions together), an average over positions (a
    pool module or function, a mean over dims from 2), or a reshape of one vector of channels
    per sample ((batch, C, 1, 1) to (batch, C))."""
    module = root.get_submodule(node.target) if node.op == "call_module" else None
    if isinstance(module, _UNIT_WISE):
        return True
    if not channels:
        return False
    if ops.node_kind(node, root).name in _AVERAGE_POOLS:
        return True
    if module is not None:
        return isinstance(module, nn.Flatten) and module.start_dim == 1
    if node.target in ("flatten", torch.flatten):
        return node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0) == 1
    if node.target in ("mean", torch.mean):
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        dims = (dims,) if isinstance(dims, int) else dims
        return isinstance(dims, (tuple, list)) and all(isinstance(d, int) and d >= 2 for d in dims)
    return op_name(node) in _RESHAPES and _same_channels(node, node.args[0], graph)


def _readers(node: fx.Node, root: fx.GraphModule, graph: SignalGraph, channels: bool,
             gates: list[fx.Node]) -> list[fx.Node]:
    """The nodes that read ``node``'s units, through what keeps their halves (the caller judges
    whether each is a layer that can pair them). A product with a gate keeps them too when the
    gate's layer duplicates its rows (``_gate_layer``): that layer goes into ``gates``."""
    found = []
    for user in node.users:
        if user.name in graph.tensorless or ops.reads_shape_only(user, node):
            continue  # x.size(), y.expand_as(x): no values of node's are read
        gate = _gate_layer(user, node, root, graph, channels)
        if gate is not None:
            gates.append(gate)
        tensors = [n for n in user.all_input_nodes if n.name not in graph.tensorless]  # not x.size()'s
        keeps = gate is not None or len(tensors) == 1 and _keeps_halves(user, root, graph, channels)
        found += _readers(user, root, graph, channels, gates) if keeps else [user]
    return found


def _channels_of(node: object, graph: SignalGraph) -> int | None:
    """C, where ``node`` holds one vector of C units per sample in dim 1 ((batch, C) or
    (batch, C, 1, 1): a squeezed map, a gate); else None."""
    stats = graph.view(node.name).stats if isinstance(node, fx.Node) and node.name in graph.nodes else None
    shape = stats.shape if stats is not None else []
    return shape[1] if len(shape) >= 2 and all(size == 1 for size in shape[2:]) else None


def _same_channels(node: fx.Node, source: object, graph: SignalGraph) -> bool:
    """Whether ``node`` holds ``source``'s vector of channels per sample, in the same order."""
    channels = _channels_of(node, graph)
    return channels is not None and channels == _channels_of(source, graph)


def _gate_layer(product: fx.Node, factor: fx.Node, root: fx.GraphModule, graph: SignalGraph,
                channels: bool) -> fx.Node | None:
    """The layer whose output an elementwise gate turns into the other factor of ``product``
    (``factor * sigmoid(layer(...))``, squeeze-excitation), or None. With its rows duplicated
    the gate multiplies both units of each pair by the same value: (f(u) g, f(-u) g), whose
    difference a paired reader reads as k u g. A conv's gate may reach the product through
    reshapes and broadcasts of its vector of channels, before or after the activation (SENet's
    ``x * y.view(b, c, 1, 1).expand_as(x)``)."""
    if ops.node_kind(product, root).family != ops.MUL or len(product.args) != 2 or factor not in product.args:
        return None
    gate = product.args[1] if product.args[0] is factor else product.args[0]
    while channels and isinstance(gate, fx.Node) and op_name(gate) in _BROADCASTS and gate.args and (
            op_name(gate) in _EXPANDS and _channels_of(gate.args[0], graph) is not None
            or _same_channels(gate, gate.args[0], graph)):
        gate = gate.args[0]
    if not isinstance(gate, fx.Node) or GATE not in graph.view(gate.name).roles or not gate.args:
        return None
    module = activation_module_of(gate, root)
    layer = gate.args[0]
    while channels and isinstance(layer, fx.Node) and op_name(layer) in _RESHAPES and len(layer.users) == 1 and \
            _same_channels(layer, layer.args[0], graph):
        layer = layer.args[0]
    if module is None or not is_elementwise(module) or not isinstance(layer, fx.Node) or len(layer.users) != 1:
        return None
    return layer


def _reads_units_of(after: nn.Module, before: nn.Module) -> bool:
    """A Linear pairs a Linear's features or (flattened, pooled) a conv's channels; a conv pairs
    a conv's channels."""
    return isinstance(after, nn.Linear) or not isinstance(before, nn.Linear)


def _reads_pairs_of(reader: fx.Node, before: nn.Module, root: fx.GraphModule, graph: SignalGraph,
                    sites: dict[str, str], calls: Counter) -> bool:
    """Whether ``reader`` can take paired columns for the units of ``before``."""
    return _pairable(reader, root, sites, calls) and root.get_submodule(reader.target).weight.shape[1] % 2 == 0 \
        and _reads_units_of(root.get_submodule(reader.target), before) and not graph.in_residual_branch(reader.name)


def _duplicates_for(gate: fx.Node, before: nn.Module, root: fx.GraphModule, graph: SignalGraph,
                    sites: dict[str, str], calls: Counter) -> bool:
    """Whether the gate's layer ``gate`` can take duplicated rows for the units of ``before``:
    as many units, each its unit's gate: both Linear, or for a conv's channels a conv or a
    Linear that gives one vector of them per sample."""
    if not _pairable(gate, root, sites, calls):
        return False
    layer = root.get_submodule(gate.target)
    units_match = isinstance(layer, nn.Linear) == isinstance(before, nn.Linear) or \
        not isinstance(before, nn.Linear) and _channels_of(gate, graph) is not None
    return units_match and layer.weight.shape[0] == before.weight.shape[0]


def looks_linear_pairs(root: fx.GraphModule, sites: dict[str, str], graph: SignalGraph) -> LooksLinear:
    """Every exact looks-linear pairing of ``root``'s Linear and conv layers around its
    activations, outside residual branches."""
    calls = Counter(n.target for n in root.graph.nodes if n.op == "call_module")
    mirrored, paired, duplicated, activations = set(), set(), set(), set()
    for node in root.graph.nodes:
        if sites.get(node.name) != "activation" or not node.args:
            continue
        module = activation_module_of(node, root)
        source = node.args[0]
        if module is None or not odd_part_is_linear(module) or not _pairable(source, root, sites, calls):
            continue
        before = root.get_submodule(source.target)
        gates: list[fx.Node] = []
        readers = _readers(node, root, graph, not isinstance(before, nn.Linear), gates)
        if len(source.users) != 1 or not readers or before.weight.shape[0] % 2:
            continue
        if all(_reads_pairs_of(r, before, root, graph, sites, calls) for r in readers) and \
                all(_duplicates_for(g, before, root, graph, sites, calls) for g in gates):
            mirrored.add(source.name)
            paired.update(r.name for r in readers)
            duplicated.update(g.name for g in gates)
            activations.add(node.name)
    layers = {name: Pairing(name in mirrored, name in paired, name in duplicated)
              for name in mirrored | paired | duplicated}
    return LooksLinear(layers, frozenset(activations))

"""Module calls in a captured graph, and what a module computes when its class cannot tell.

Both captures record, in each node's ``nn_module_stack``, the module calls it was made in. A
call becomes one ``call_module`` node (as fx records a leaf: ``module(x)``) when it takes one
tensor and gives one value, and it is either a layer the registry knows (``ops``), a declared
leaf, or a module whose operators say what it is (``behaviour_kind``): a normalization written
out as ``x * rsqrt(mean(x**2) + eps) * w`` (LlamaRMSNorm, T5LayerNorm, a user's RMSNorm) or an
elementwise activation written out (GPT-2's tanh GELU). The call keeps its operators as a
small graph (``operations``), so that code can still be written for a class that generated
code cannot rebuild.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.experimental.symbolic_shapes import statically_known_true

from initlint import ops
from initlint.renorm_layer import RenormLayer, StochasticLayer

OPERATIONS = "initlint_operations"
"""Node meta of a call_module node made from a module call: the call's own operators as a graph
of one input (its parameters as get_attr relative to the module), so that code can be written
for a module whose class cannot be rebuilt (``initlint fix``)."""
_REDUCTIONS = frozenset({"mean", "var", "var_mean", "std", "std_mean"})
_INVERSE_SCALES = frozenset({"rsqrt", "sqrt", "div", "reciprocal"})
_SHAPE_ONLY = frozenset({"view", "reshape", "_unsafe_view", "expand", "to", "_to_copy", "detach", "clone",
                         "contiguous", "lift_fresh_copy", "alias", "unsqueeze", "squeeze", "float", "type_as"})
_AFFINE = frozenset({"add", "sub", "mul", "div", "neg", "rsub"})
RANDOM_DRAWS = frozenset({"rand", "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm",
                          "multinomial", "bernoulli", "bernoulli_", "uniform_", "normal", "normal_", "exponential_",
                          "random_"})
"""Operators that draw random numbers (the in-place ones fill a tensor made empty: timm's
``x.new_empty(shape).bernoulli_(keep)``)."""
_FACTORIES = frozenset({"empty", "new_empty", "empty_like", "zeros", "new_zeros", "zeros_like", "ones", "new_ones",
                        "ones_like", "full", "new_full", "full_like", "scalar_tensor"})
"""Operators that make a tensor of a size and fill it (random numbers fill it in ``RANDOM_DRAWS``)."""
_SIZE_READS = frozenset({"getattr", "getitem", "size", "sym_size", "dim"})
"""What fx records for ``x.shape[0]`` and ``x.ndim``: the size of the random numbers drawn."""
_OPERATORS = {operator.add: "add", operator.sub: "sub", operator.mul: "mul", operator.truediv: "div",
              operator.neg: "neg", operator.pow: "pow"}


def op_name(node: fx.Node) -> str:
    """The ATen name of what a node computes, whichever capture made it: ``aten.mul.Tensor``,
    ``operator.mul``, ``torch.mul`` and ``x.mul(...)`` are all "mul"."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return target.overloadpacket.__name__
    if node.op == "call_method":
        return str(target)
    return _OPERATORS.get(target) or getattr(target, "__name__", "")


def _is_pointwise(node: fx.Node) -> bool:
    """Elementwise, by the tag ATen gives its operators."""
    if isinstance(node.target, torch._ops.OpOverload):
        return torch.Tag.pointwise in node.target.tags
    packet = getattr(torch.ops.aten, op_name(node), None) if node.op in ("call_function", "call_method") else None
    return packet is not None and any(
        torch.Tag.pointwise in getattr(packet, overload).tags for overload in packet.overloads())


def behaviour_kind(nodes: list[fx.Node], uses_state: bool) -> ops.OpKind | None:
    """What a module computes, read from its operators: ``x * rsqrt(mean(x**2) + eps) * w``
    or ``(x - mean) / std`` is a normalization, whatever its class (LlamaRMSNorm, T5LayerNorm);
    pointwise arithmetic around a nonlinear function, with no weights, is an activation
    (GPT-2's ``0.5 * x * (1 + tanh(...))``), whose inner additions are no residual adds.
    Pointwise arithmetic with random numbers, and no weights, is stochastic depth or a dropout
    written out (Hugging Face's ``drop_path``: ``x / keep * floor(keep + rand(...))``): as one
    call of the module, it follows ``model.eval()``, where its operators, recorded in training
    mode, would drop branches at inference too."""
    names = {op_name(node) for node in nodes}
    if names & RANDOM_DRAWS:
        stochastic = all(_is_pointwise(node) or op_name(node) in _SHAPE_ONLY | RANDOM_DRAWS | _FACTORIES | _SIZE_READS
                         for node in nodes)
        return ops.DROP_PATH if stochastic and not uses_state else None
    plain = all(_is_pointwise(node) or op_name(node) in _SHAPE_ONLY for node in nodes
                if op_name(node) not in _REDUCTIONS)
    if not plain:
        return None
    if names & _REDUCTIONS and names & _INVERSE_SCALES:
        return ops.OpKind(ops.NORM, "layer_norm" if "sub" in names else "rms_norm")
    if not uses_state and not names & _REDUCTIONS and names - _AFFINE - _SHAPE_ONLY:
        return _sole_activation(nodes) or ops.OpKind(ops.ACTIVATION, "activation")
    return None


def _sole_activation(nodes: list[fx.Node]) -> ops.OpKind | None:
    """The activation a module computes when it applies one known activation and nothing else
    but reshapes (timm's ``Sigmoid`` class is ``x.sigmoid()``): as that activation, a gate
    where it is a sigmoid that multiplies, not an activation of no known kind."""
    acting = [node for node in nodes if op_name(node) not in _SHAPE_ONLY]
    if len(acting) != 1 or acting[0].op == "call_module":
        return None
    kind = ops.node_kind(acting[0], None)
    return kind if kind.family == ops.ACTIVATION else None


def is_leaf(module: nn.Module, leaf_modules: Sequence[type[nn.Module]]) -> bool:
    """A layer the registry knows, called as the registry knows it, or one the user declared a
    leaf. A subclass with a ``forward`` of its own (OPT's and BART's learned positional
    embeddings are ``nn.Embedding``s that take a mask or ids and compute positions) is no leaf:
    ``module(x)`` would not be the call that was made."""
    if isinstance(module, (RenormLayer, StochasticLayer, *leaf_modules)):
        return True
    known = ops.module_kind(module) is not ops.UNKNOWN and not isinstance(module, (nn.Sequential, nn.ModuleList))
    return known and type(module).forward.__module__.startswith("torch.nn.")


def _is_size(node: fx.Node) -> bool:
    return isinstance(node.meta.get("val"), torch.SymInt)


def _dimension_of(tensor: fx.Node, size: fx.Node) -> int | None:
    """The dimension of ``tensor`` whose (symbolic) size ``size`` reads, if any."""
    value, shape = size.meta.get("val"), getattr(tensor.meta.get("val"), "shape", ())
    return next((d for d, length in enumerate(shape) if isinstance(length, torch.SymInt)
                 and statically_known_true(length == value)), None)


@dataclasses.dataclass
class ModuleCall:
    """The nodes of one call of a module; ``kind`` when its behaviour, not its class, says what it is."""

    path: str
    stack: dict
    nodes: list[fx.Node] = dataclasses.field(default_factory=list)
    kind: ops.OpKind | None = None
    external: fx.Node | None = None
    """The one tensor it reads from outside itself."""
    sizes: dict[fx.Node, int] = dataclasses.field(default_factory=dict)
    """Sizes it reads, each the size of a dimension of ``external``: by that dimension."""
    result: fx.Node | None = None
    """The one node whose value leaves it."""


class ModuleCalls:
    """Finds the module calls of a graph that become one node each.

    ``path_of`` turns a stack entry's path into a path in ``model`` ('' or None: no module);
    ``is_state`` tells the nodes that hold the model's parameters and buffers; ``live`` are the
    nodes whose values matter (users outside it are ignored)."""

    def __init__(
        self, model: nn.Module, leaf_modules: Sequence[type[nn.Module]], path_of: Callable[[str], str | None],
        is_state: Callable[[fx.Node], bool],
    ) -> None:
        self.model, self.leaf_modules, self.path_of, self.is_state = model, leaf_modules, path_of, is_state

    def owners(self, nodes: Iterable[fx.Node], live: set[fx.Node], ops_only: bool) -> dict[fx.Node, ModuleCall]:
        """For each node that a call becomes one node for, that call (the outermost one).
        With ``ops_only``, calls of layers the graph already has as nodes are left alone."""
        calls: dict[str, ModuleCall] = {}
        for node in nodes:
            if node in live and node.op in ("call_function", "call_method", "call_module"):
                stack = list((node.meta.get("nn_module_stack") or {}).items())
                for depth, (key, (path, _)) in enumerate(stack):
                    if self.path_of(path):
                        call = calls.setdefault(key, ModuleCall(self.path_of(path), dict(stack[:depth + 1])))
                        call.nodes.append(node)
        owner: dict[fx.Node, ModuleCall] = {}
        for call in calls.values():  # outer calls come first: they claim their nodes first
            if any(node in owner for node in call.nodes) or not self._single_in_out(call, live):
                continue
            if is_leaf(self.model.get_submodule(call.path), self.leaf_modules):
                if ops_only:
                    continue
            else:
                uses_state = any(self.is_state(n) for node in call.nodes for n in node.all_input_nodes)
                call.kind = behaviour_kind(call.nodes, uses_state)
                if call.kind is None:
                    continue
            owner.update((node, call) for node in call.nodes)
        return owner

    def _single_in_out(self, call: ModuleCall, live: set[fx.Node]) -> bool:
        """One tensor in, one value out: the call is ``module(x)``. Fills in ``call``'s input,
        result and sizes; its nodes that compute sizes are left to the graph (later calls may
        read them too). A size it reads is no input where it is one of x's own, wherever it is
        computed: export at symbolic sizes computes each size once, and a stochastic depth's
        ``rand((x.shape[0], 1, 1))`` reads the size that an earlier reshape computed (Swin's
        windows)."""
        inside = set(call.nodes)
        reads = {n for node in call.nodes for n in node.all_input_nodes if n not in inside and not self.is_state(n)}
        leaving = [node for node in call.nodes if not _is_size(node) and
                   any(user in live and user not in inside for user in node.users)]
        tensors = [n for n in reads if not _is_size(n)]
        if len(tensors) != 1 or len(leaving) != 1:
            return False
        (call.external,), (call.result,) = tensors, leaving
        call.sizes = {n: d for n in [*call.nodes, *reads] if _is_size(n)
                      and (d := _dimension_of(call.external, n)) is not None}
        call.nodes = [node for node in call.nodes if not _is_size(node)]
        kept = set(call.nodes)
        return {n for node in call.nodes for n in node.all_input_nodes
                if n not in kept and n not in call.sizes and not self.is_state(n)} == {call.external}

    def operations(self, call: ModuleCall, state_path: Callable[[fx.Node], str | None],
                   transform: Callable[[object], object] = lambda target: target) -> fx.Graph | None:
        """The call's operators with its one input as a placeholder and its parameters as
        get_attr relative to the module; None when it reads state outside the module."""
        graph = fx.Graph()
        env = {call.external: graph.placeholder("x")}
        for size, dimension in call.sizes.items():  # read from x where the call runs
            env[size] = graph.call_function(torch.ops.aten.sym_size.int, (env[call.external], dimension))
        prefix = f"{call.path}."
        for node in call.nodes:
            for source in node.all_input_nodes:
                if source in env or source in call.nodes:
                    continue
                path = state_path(source) or ""
                if not path.startswith(prefix):
                    return None
                env[source] = graph.get_attr(path[len(prefix):])
            env[node] = graph.node_copy(node, env.__getitem__)
            env[node].target = transform(env[node].target)
        graph.output(env[call.result])
        return graph


def collapse_in_place(graph: fx.Graph, model: nn.Module, leaf_modules: Sequence[type[nn.Module]],
                      call_site: str) -> None:
    """Give each call that fx traced through, and whose behaviour names it, one node again,
    as export's capture does: a user's RMSNorm is then a norm, not a mean that reads as a pool.
    ``call_site`` is the meta key of the user's line, carried over from the call's first node."""
    finder = ModuleCalls(model, leaf_modules, lambda path: path, lambda n: n.op == "get_attr")
    calls = {id(call): call for call in finder.owners(graph.nodes, set(graph.nodes), ops_only=True).values()}
    collapsed: dict[fx.Node, fx.Node] = {}  # a call's result -> its call's node (a call may read another's)
    for call in calls.values():
        with graph.inserting_after(call.result):
            node = graph.call_module(call.path, (collapsed.get(call.external, call.external),))
        call.result.replace_all_uses_with(node)
        collapsed[call.result] = node
        node.meta.update({"nn_module_stack": call.stack, ops.KIND: call.kind, call_site: call.nodes[0].meta.get(call_site),
                          OPERATIONS: finder.operations(call, lambda n: n.target if n.op == "get_attr" else None)})
        for inner in reversed(call.nodes):
            graph.erase_node(inner)
    for node in list(graph.nodes):
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)

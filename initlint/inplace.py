"""In-place operations as out-of-place ones, in both captures' graphs.

torch.fx's handling of them (pytorch issue 68301):

``x.mul_(a); return x`` traces to a ``mul_`` node whose result nothing uses: the returned ``x``
is still the node from before the multiplication, so any pass that drops unused nodes drops
the multiplication, and statistics read from ``x`` miss it. Running it in place during the
probe has its own trouble: it mutates values already measured, a leaf that needs a gradient,
or a parameter of the user's model. So every in-place call becomes its out-of-place twin, and
the uses of the mutated value that come after it read the new node instead. Calls and modules
with ``inplace=True`` (``F.relu(h, inplace=True)``, ``nn.ReLU(inplace=True)``) keep their
target, which the probe runs out of place, and get the same rewiring.

torch.export's graph keeps ATen's in-place operators the same way, and a write into part of a
value is a view then an in-place copy: ``out[:, t] = y`` is ``select(out, 1, t)`` then
``copy_(that, y)`` (RWKV's recurrence fills a zero tensor so). ``functionalize_writes``
turns each into its out-of-place twin and a scatter of the result back into the viewed value
(``select_scatter``), the way ``torch.func.functionalize`` does, but without a second trace.
"""

from __future__ import annotations

import copy
import inspect
import operator

import torch
import torch.fx as fx
import torch.nn as nn

_ATEN = torch.ops.aten
PARTIAL_WRITE = "initlint_partial_write"
"""Node meta: a value ``functionalize_writes`` made that only later writes read (the tensor
half-filled by a recurrence): not measured, since no code of the model ever reads it."""

_AUGMENTED = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


def _twin_of_call(node: fx.Node) -> object | None:
    """The out-of-place twin of an in-place call (``mul_`` -> ``mul``), or None."""
    if node.op == "call_function" and node.target in _AUGMENTED:
        return _AUGMENTED[node.target]
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if node.op not in ("call_method", "call_function") or not isinstance(name, str):
        return None
    if not name.endswith("_") or name.endswith("__"):
        return None
    if node.op == "call_method":
        return name[:-1] if hasattr(torch.Tensor, name[:-1]) else None
    return getattr(torch, name[:-1], None) if getattr(torch, name, None) is node.target else None


def _runs_in_place(node: fx.Node, root: nn.Module) -> bool:
    """A call that says ``inplace=True`` (``F.relu(x, inplace=True)``), or a module built with
    it (``nn.ReLU(inplace=True)``); the probe runs both out of place."""
    if node.op == "call_module":
        return getattr(root.get_submodule(node.target), "inplace", False) is True
    if node.op != "call_function":
        return False
    try:
        bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):
        return node.kwargs.get("inplace") is True
    return bound.arguments.get("inplace") is True


def functionalize_inplace(graph: fx.Graph, root: nn.Module) -> int:
    """Rewrite in-place calls on graph values as out-of-place ones, and make the uses of the
    mutated value that follow read the call's result; returns how many calls."""
    rewritten = 0
    order = {node: index for index, node in enumerate(graph.nodes)}
    for node in list(graph.nodes):
        twin = _twin_of_call(node)
        if (twin is None and not _runs_in_place(node, root)) or not node.args:
            continue
        mutated = node.args[0]
        if not isinstance(mutated, fx.Node):
            continue
        for user in list(mutated.users):
            if user is not node and order[user] > order[node]:
                user.replace_input_with(mutated, node)
        if twin is not None:
            node.target = twin
        rewritten += 1
    return rewritten


def out_of_place(target: object) -> object:
    """The out-of-place twin of an in-place ATen operator (``aten.mul_.Tensor`` -> ``aten.mul.Tensor``),
    else ``target`` itself."""
    if not isinstance(target, torch._ops.OpOverload) or not target._schema.name.endswith("_"):
        return target
    packet = getattr(_ATEN, target.overloadpacket.__name__[:-1], None)
    return getattr(packet, target._overloadname, target) if packet is not None else target


def module_out_of_place(module: nn.Module) -> nn.Module:
    """``module``, or a shallow copy with ``inplace=False`` (``nn.ReLU(inplace=True)``): run on a
    leaf that needs a gradient, or on a value already measured, it must not write into it."""
    if not getattr(module, "inplace", False):
        return module
    module = copy.copy(module)
    module.inplace = False
    return module


class UnfollowableWrite(Exception):
    """An in-place write into a view whose inverse initlint does not know."""


def _writes_first_argument(node: fx.Node) -> bool:
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload) or not node.args:
        return False
    alias = target._schema.arguments[0].alias_info if target._schema.arguments else None
    return alias is not None and alias.is_write and isinstance(node.args[0], fx.Node)


def _is_view(node: fx.Node) -> bool:
    """An ATen operator whose result shares its first argument's memory."""
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return False
    returns = target._schema.returns
    return bool(returns) and returns[0].alias_info is not None and not returns[0].alias_info.is_write


def _shape(graph: fx.Graph, node: fx.Node) -> list[int | fx.Node]:
    """``node``'s shape as arguments of a new node: a size that export kept symbolic is read
    from ``node`` at run time (``aten.sym_size``), so the graph still runs at any size."""
    return [graph.call_function(_ATEN.sym_size.int, (node, dim)) if isinstance(size, torch.SymInt) else size
            for dim, size in enumerate(node.meta["val"].shape)]


def _inverse_permutation(dims: list[int]) -> list[int]:
    rank = len(dims)
    inverse = [0] * rank
    for position, dim in enumerate(dims):
        inverse[dim % rank] = position
    return inverse


_RESHAPES = frozenset({"view", "_unsafe_view", "reshape", "unsqueeze", "squeeze", "flatten", "unflatten",
                       "view_as", "_reshape_alias"})


def _write_back(graph: fx.Graph, view: fx.Node, parent: fx.Node, written: fx.Node) -> fx.Node:
    """``parent`` with the part that ``view`` shows replaced by ``written``."""
    name, rest = view.target.overloadpacket.__name__, view.args[1:]
    if name == "select":
        return graph.call_function(_ATEN.select_scatter.default, (parent, written, *rest))
    if name == "slice":
        return graph.call_function(_ATEN.slice_scatter.default, (parent, written, *rest))
    if name == "diagonal":
        return graph.call_function(_ATEN.diagonal_scatter.default, (parent, written, *rest))
    if name == "as_strided":
        return graph.call_function(_ATEN.as_strided_scatter.default, (parent, written, *rest))
    if name in _RESHAPES:
        return graph.call_function(_ATEN.reshape.default, (written, _shape(graph, parent)))
    if name == "transpose":
        return graph.call_function(_ATEN.transpose.int, (written, *rest))
    if name == "t":
        return graph.call_function(_ATEN.t.default, (written,))
    if name == "permute":
        return graph.call_function(_ATEN.permute.default, (written, _inverse_permutation(list(rest[0]))))
    if name in ("alias", "detach"):
        return written
    raise _unfollowable(view)


def _unfollowable(view: fx.Node) -> UnfollowableWrite:
    name = view.target.overloadpacket.__name__
    return UnfollowableWrite(f"the model writes in place into a view made by aten.{name}, whose inverse "
                             "initlint does not know")


def _computed(graph: fx.Graph, node: fx.Node, twin: object) -> fx.Node:
    """The value an in-place operator writes, computed out of place. ``copy_(dest, src)`` is
    ``src`` cast and broadcast to ``dest`` (``aten.copy`` itself has no derivative)."""
    if twin is not _ATEN.copy.default:
        return graph.call_function(twin, node.args, node.kwargs)
    dest, src = node.args[:2]
    cast = graph.call_function(_ATEN._to_copy.default, (src,), {"dtype": dest.meta["val"].dtype})
    return graph.call_function(_ATEN.expand.default, (cast, _shape(graph, dest)))


def functionalize_writes(graph: fx.Graph) -> int:
    """Rewrite export's in-place operators on values the forward computed as out-of-place ones,
    writes into views as scatters into the viewed value, and make every later use of the
    written value, and of the views it was written through, read the new nodes; returns how
    many nodes it made. Writes into parameters, buffers and inputs (BatchNorm's running
    statistics) are left alone: nothing the outputs depend on reads them, so capture drops them. Raises
    ``UnfollowableWrite`` for a write through a view it cannot invert (``expand``).
    Values made only for later writes to read are marked ``PARTIAL_WRITE``."""
    order = {node: index for index, node in enumerate(graph.nodes)}
    made: set[fx.Node] = set()
    for node in list(graph.nodes):
        twin = out_of_place(node.target) if _writes_first_argument(node) else node.target
        if twin is node.target:
            continue
        chain = [node.args[0]]  # the written value, then each value it is a view of
        while _is_view(chain[-1]):
            chain.append(chain[-1].args[0])
        if chain[-1].op == "placeholder":
            continue
        if chain[-1].target is operator.getitem and _is_view(chain[-1].args[0]):  # one of split's views
            raise _unfollowable(chain[-1].args[0])
        replaced: list[tuple[fx.Node, fx.Node]] = []
        following = node.next
        with graph.inserting_before(following):
            written = _computed(graph, node, twin)
            written.meta["val"] = node.meta.get("val")
            replaced += [(node, written), (chain[0], written)]
            for view, parent in zip(chain, chain[1:]):
                written = _write_back(graph, view, parent, written)
                written.meta["val"] = parent.meta.get("val")
                replaced.append((parent, written))
        for old, new in replaced:
            for user in list(old.users):
                if order.get(user, -1) > order[node]:
                    user.replace_input_with(old, new)
        new = node.next
        while new is not following:  # the nodes just made: where and why, as the write's own
            made.add(new)
            order[new] = order[node]
            new.meta.update({key: node.meta[key] for key in ("nn_module_stack", "stack_trace") if key in node.meta})
            new = new.next
        graph.erase_node(node)
    for new in made:
        new.meta[PARTIAL_WRITE] = bool(new.users) and all(user in made for user in new.users)
    return len(made)

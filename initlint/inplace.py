"""A guard against torch.fx's handling of in-place operations (pytorch issue 68301).

``x.mul_(a); return x`` traces to a ``mul_`` node whose result nothing uses: the returned ``x``
is still the node from before the multiplication, so any pass that drops unused nodes drops
the multiplication, and statistics read from ``x`` miss it. Running it in place during the
probe has its own trouble: it mutates values already measured, a leaf that needs a gradient,
or a parameter of the user's model. So every in-place call becomes its out-of-place twin, and
the uses of the mutated value that come after it read the new node instead. Calls and modules
with ``inplace=True`` (``F.relu(h, inplace=True)``, ``nn.ReLU(inplace=True)``) keep their
target, which the probe runs out of place, and get the same rewiring.
"""

from __future__ import annotations

import inspect
import operator

import torch
import torch.fx as fx
import torch.nn as nn

_AUGMENTED = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


def _out_of_place(node: fx.Node) -> object | None:
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
        twin = _out_of_place(node)
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

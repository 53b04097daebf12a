"""A guard against torch.fx's handling of in-place operations (pytorch issue 68301).

``x.mul_(a); return x`` traces to a ``mul_`` node whose result nothing uses: the returned ``x``
is still the node from before the multiplication, so any pass that drops unused nodes drops
the multiplication, and statistics read from ``x`` miss it. Running it in place during the
probe has its own trouble: it mutates values already measured, a leaf that needs a gradient,
or a parameter of the user's model. So every in-place call becomes its out-of-place twin, and
the uses of the mutated value that come after it read the new node instead.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

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


def functionalize_inplace(graph: fx.Graph) -> int:
    """Rewrite in-place calls on graph values as out-of-place ones; returns how many."""
    rewritten = 0
    order = {node: index for index, node in enumerate(graph.nodes)}
    for node in list(graph.nodes):
        twin = _out_of_place(node)
        if twin is None or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        mutated = node.args[0]
        for user in list(mutated.users):
            if user is not node and order[user] > order[node]:
                user.replace_input_with(mutated, node)
        node.target = twin
        rewritten += 1
    return rewritten

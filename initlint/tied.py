"""Tied weights: a parameter that more than one reader of a traced graph uses.

GPT-2's head reuses its token embedding's matrix as a second layer; other language models read
it directly (``F.linear(h, self.emb.weight)``). Rescaling or folding into such a parameter changes
every use of it, so the planner and the fold leave it alone. Readers are the graph's layer calls
(a layer called twice is one reader) and its direct reads of a parameter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch
import torch.fx as fx
import torch.nn as nn


class TiedParameters:
    """The parameters of one graph module that more than one of its readers uses."""

    def __init__(self, root: fx.GraphModule) -> None:
        readers: dict[int, set[str]] = defaultdict(set)
        for node in root.graph.nodes:
            for parameter in _read_by(node, root):
                readers[id(parameter)].add(node.target)
        self._ids = frozenset(key for key, who in readers.items() if len(who) > 1)

    def includes(self, parameter: torch.Tensor) -> bool:
        return id(parameter) in self._ids

    def in_module(self, module: nn.Module) -> bool:
        """Whether any parameter of ``module`` is tied."""
        return any(self.includes(parameter) for parameter in module.parameters())


def parameter_at(root: nn.Module, target: str) -> nn.Parameter | None:
    """The parameter a ``get_attr`` target names, or None for a buffer or a constant."""
    try:
        return root.get_parameter(target)
    except AttributeError:
        return None


def _read_by(node: fx.Node, root: fx.GraphModule) -> Iterable[nn.Parameter]:
    if node.op == "call_module":
        return root.get_submodule(node.target).parameters()
    if node.op == "get_attr" and (parameter := parameter_at(root, node.target)) is not None:
        return [parameter]
    return []

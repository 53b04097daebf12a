"""The fallback when torch.fx cannot trace a model: probe it with module hooks instead.

The model runs its own ``forward`` (data-dependent control flow included) on a copy put in
first-step mode, and a forward hook on every leaf module (what fx would keep whole) measures
each call. The calls become the nodes of a reconstructed fx graph, in call order: a call's input
is linked to the call that produced that very tensor, and a tensor made by code between modules
(``x + y``, ``torch.cat``) gets an ``untracked`` node of its own that carries its statistics.
So each layer knows its own input and output, but the functional operations between layers
(adds, multiplies, means) are missing: rules that need the graph's structure are skipped.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.node import map_aggregate

from initlint import ops
from initlint.inputs import ProbeInputs
from initlint.locations import SourceLocation
from initlint.memory import MemoryBudget
from initlint.probe import STATS, ProbeRun, first_step_module, measure, run_first_step
from initlint.progress import Progress
from initlint.trace import Traced, outermost_leaves, tag_nodes


def untracked(x: torch.Tensor) -> torch.Tensor:
    """Stands for a tensor computed by code between modules, which hooks cannot see."""
    return x


def _first_step_copy(model: nn.Module) -> nn.Module:
    """A copy that runs as a first training step does (batch statistics, dropout off, no
    in-place layers); hooks run the model's own forward, so the model itself must not."""
    runner = copy.deepcopy(model).train()
    for module in runner.modules():
        if ops.module_kind(module).family == ops.DROPOUT:
            module.eval()
        if getattr(module, "inplace", False):
            module.inplace = False
    return runner


class _GraphRecorder:
    """Builds the graph of leaf-module calls while the forward pass runs."""

    def __init__(self, batch_size: int | None, run: ProbeRun) -> None:
        self.graph = fx.Graph()
        self.batch_size = batch_size
        self.run = run
        self._producers: dict[int, tuple[torch.Tensor, fx.Node]] = {}
        self._measuring = False

    def add_input(self, name: str, tensor: torch.Tensor) -> None:
        self._record(self.graph.placeholder(name), tensor)

    def node_for(self, value: object) -> object:
        """The node that produced ``value`` (a tensor), else an ``untracked`` node for it."""
        if not isinstance(value, torch.Tensor):
            return value
        known = self._producers.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        return self._record(self.graph.call_function(untracked, ()), value)

    def module_called(self, path: str, module: nn.Module, args: tuple, output: object) -> None:
        if self._measuring:
            return  # the saturation measurement calls the module again: not a layer of the model
        self.run.progress.advance()
        inputs = tuple(self.node_for(a) for a in args if isinstance(a, torch.Tensor))
        node = self.graph.call_module(path, inputs)
        saturating = None
        if ops.module_kind(module).name in ops.SATURATING and args and isinstance(args[0], torch.Tensor):
            saturating = (first_step_module(module), args[0])
        if isinstance(output, torch.Tensor):
            self._record(node, output, saturating)

    def finish(self, output: object) -> None:
        self.graph.output(map_aggregate(output, self.node_for))

    def _record(self, node: fx.Node, tensor: torch.Tensor, saturating=None) -> fx.Node:
        if tensor.is_floating_point():
            self._measuring = True
            try:
                node.meta[STATS] = measure(tensor, self.batch_size, self.run, saturating)
            finally:
                self._measuring = False
        self._producers[id(tensor)] = (tensor, node)  # the tensor stays alive: ids are not reused
        return node


def probe_with_hooks(
    model: nn.Module, inputs: ProbeInputs, seed: int, leaf_modules: Sequence[type[nn.Module]],
    module_sites: dict[str, SourceLocation], fallback: SourceLocation | None, reason: str,
    progress: Progress = Progress(), budget: MemoryBudget | None = None,
) -> tuple[Traced, str | None]:
    """Probe ``model`` through hooks; returns the reconstructed graph (mode "hooks", with
    ``reason`` in its note) and the probe's own note."""
    runner = _first_step_copy(model)
    leaves = outermost_leaves(runner, leaf_modules)
    recorder: _GraphRecorder | None = None

    def forward(tensors: list[torch.Tensor], run: ProbeRun) -> object:
        nonlocal recorder
        recorder = _GraphRecorder(inputs.batch_size, run)
        for spec, tensor in zip(inputs.specs, tensors):
            recorder.add_input(spec.name, tensor)
        handles = [
            module.register_forward_hook(functools.partial(_hook, recorder, path))
            for path, module in leaves
        ]
        try:
            output = runner(*tensors)
        finally:
            for handle in handles:
                handle.remove()
        recorder.finish(output)
        return output

    probe_note = run_first_step(forward, inputs, seed, progress, len(leaves), runner.parameters(), budget)
    graph_module = fx.GraphModule(runner, recorder.graph, type(model).__name__)
    tag_nodes(graph_module, module_sites, fallback)
    note = f"{reason}; probed with module hooks instead ({len(leaves)} leaf modules)"
    return Traced(graph_module, "hooks", note), probe_note


def _hook(recorder: _GraphRecorder, path: str, module: nn.Module, args: tuple, output: object) -> None:
    recorder.module_called(path, module, args, output)

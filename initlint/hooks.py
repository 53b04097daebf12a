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

from initlint import ops
from initlint.inputs import ProbeInputs
from initlint.locations import SourceLocation
from initlint.memory import MemoryBudget
from initlint.model_outputs import backward_outputs
from initlint.probe import STATS, ProbeRun, first_step_module, measure, run_first_step
from initlint.progress import Progress
from initlint.trace import Traced, outermost_leaves, tag_nodes
from initlint.train_or_eval import train_else_eval


def untracked(x: torch.Tensor) -> torch.Tensor:
    """Stands for a tensor computed by code between modules, which hooks cannot see."""
    return x


def _first_step_copy(model: nn.Module, train: bool = True) -> nn.Module:
    """A copy that runs as a first training step does (batch statistics, dropout off, no
    in-place layers), or in eval mode; hooks run the model's own forward, so the model itself
    must not."""
    runner = copy.deepcopy(model).train(train)
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
        """The graph's output: the values the backward pass starts from."""
        nodes = [self.node_for(t) for t in backward_outputs(output)]
        self.graph.output(nodes[0] if len(nodes) == 1 else tuple(nodes))

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
    ``reason`` in its note) and the probe's own note. The inputs reach the model as a data
    loader gives them (not requiring grad); a model whose train-mode forward fails (it wants
    targets) is probed in eval mode, and the note says so."""
    held = budget.held if budget is not None else 0

    def attempt(train: bool) -> tuple[nn.Module, _GraphRecorder, int, str | None]:
        if budget is not None:
            budget.held = held  # a failed attempt's values are gone
        runner = _first_step_copy(model, train)
        leaves = outermost_leaves(runner, leaf_modules)
        recorder: list[_GraphRecorder] = []

        def forward(tensors: list[torch.Tensor], run: ProbeRun) -> object:
            recorder[:] = [_GraphRecorder(inputs.batch_size, run)]
            for spec, tensor in zip(inputs.specs, tensors):
                recorder[0].add_input(spec.name, tensor)
            handles = [
                module.register_forward_hook(functools.partial(_hook, recorder[0], path))
                for path, module in leaves
            ]
            args, kwargs = inputs.bind(tensors)
            try:
                output = runner(*args, **kwargs)
            finally:
                for handle in handles:
                    handle.remove()
            recorder[0].finish(output)
            return output

        note = run_first_step(forward, inputs, seed, progress, len(leaves), runner.parameters(), budget,
                              inputs_require_grad=False)
        return runner, recorder[0], len(leaves), note

    (runner, recorder, leaf_count, probe_note), mode_note = train_else_eval(attempt)
    graph_module = fx.GraphModule(runner, recorder.graph, type(model).__name__)
    tag_nodes(graph_module, module_sites, fallback)
    note = f"{reason}; probed with module hooks instead ({leaf_count} leaf modules)"
    return Traced(graph_module, "hooks", note), "; ".join(filter(None, [mode_note, probe_note])) or None


def _hook(recorder: _GraphRecorder, path: str, module: nn.Module, args: tuple, output: object) -> None:
    recorder.module_called(path, module, args, output)

"""Push Gaussian probes through a GraphModule and store per-node statistics in ``node.meta``.

In the spirit of torch.fx's ``ShapeProp``: an ``Interpreter`` that measures every value it
computes. The model is run as the first training step sees it (BatchNorm on batch statistics),
with dropout off for determinism, and without side effects: running stats are not updated,
in-place layers run out of place, parameter ``.grad`` is never touched (gradients come from
``torch.autograd.grad``), and the global RNG state is restored.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from initlint import ops
from initlint.attention import attention_inside, contains_attention, of_sdpa, of_softmax
from initlint.errors import InitlintError
from initlint.inplace import PARTIAL_WRITE, module_out_of_place
from initlint.inputs import ProbeInputs
from initlint.materialize import PieceByPiece
from initlint.model_outputs import backward_outputs, tensors_in
from initlint.memory import MemoryBudget
from initlint.preserve import buffers_preserved
from initlint.progress import Progress
from initlint.stats import NodeStats, SoftmaxStats, most_peaked, std_of, tensor_stats

STATS = "initlint_stats"
CARRIES_TENSOR = "initlint_carries_tensor"
"""Node meta: whether the value holds a tensor; sizes and dtypes carry no signal."""
SOFTMAX = "initlint_softmax"
"""Node meta: for a softmax or an attention (or a module call holding one), its ``SoftmaxStats``;
an ``nn.MultiheadAttention`` returns a tuple, so this is no part of the value's ``NodeStats``."""
SATURATION_SLOPE = 0.1
"""An activation input counts as saturated where the slope is below this fraction of its maximum."""
_SLOPE_GRID = (-20.0, 20.0, 8001)


def _identity(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return x


def _batch_norm_on_batch_stats(module: nn.modules.batchnorm._BatchNorm) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, None, None, module.weight, module.bias, True, 0.0, module.eps)
    return forward


def first_step_module(module: nn.Module) -> Callable[..., object]:
    """The callable that behaves like ``module`` in a first training step, minus side effects."""
    if ops.module_kind(module).family == ops.DROPOUT:
        return _identity
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return _batch_norm_on_batch_stats(module)
    return module_out_of_place(module)


_ATEN = torch.ops.aten
_FIRST_STEP_ARGUMENTS: dict[object, dict[int | str, object]] = {
    # what a first training step passes, by position or name: batch statistics, no dropout
    F.batch_norm: {"running_mean": None, "running_var": None, "training": True},
    _ATEN.batch_norm.default: {3: None, 4: None, 5: True},
    F.scaled_dot_product_attention: {"dropout_p": 0.0},
    _ATEN.scaled_dot_product_attention.default: {4: 0.0},
}


def first_step_call(target: Callable, args: tuple, kwargs: dict) -> object:
    """Call a function node the way a first training step would, minus side effects."""
    if ops.function_kind(target).family == ops.DROPOUT:
        x = args[0]
        return (x, torch.ones_like(x, dtype=torch.bool)) if target is _ATEN.native_dropout.default else x
    if isinstance(target, torch._ops.OpOverload):
        args = list(args)
        for position, value in _FIRST_STEP_ARGUMENTS.get(target, {}).items():
            if position < len(args):
                args[position] = value
            else:
                kwargs = {**kwargs, target._schema.arguments[position].name: value}
        return target(*args, **kwargs)
    try:
        bound = inspect.signature(target).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return target(*args, **kwargs)
    bound.arguments.update(_FIRST_STEP_ARGUMENTS.get(target, {}))
    if bound.arguments.get("inplace"):
        bound.arguments["inplace"] = False
    return target(*bound.args, **bound.kwargs)


@functools.lru_cache(maxsize=None)
def _slope_grid(device: str) -> torch.Tensor:
    return torch.linspace(*_SLOPE_GRID, device=device)


def _slope(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    x = x.detach().float().requires_grad_()
    with torch.enable_grad():
        (slope,) = torch.autograd.grad(fn(x).sum(), x)
    return slope.abs()


def saturated_fraction(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    """Share of ``x`` where elementwise ``fn`` has a slope under ``SATURATION_SLOPE`` of its maximum."""
    max_slope = _slope(fn, _slope_grid(str(x.device))).max()
    return (_slope(fn, x) < SATURATION_SLOPE * max_slope).float().mean().item()


class FirstStepInterpreter(fx.Interpreter):
    """Runs a graph as a first training step would, without side effects on the model.
    Subclasses see every node's inputs and output through ``observe``. With ``pieces``, a
    model on the meta device runs one real layer at a time (``initlint.materialize``)."""

    def __init__(self, graph_module: fx.GraphModule, pieces: PieceByPiece | None = None) -> None:
        super().__init__(graph_module)
        self.pieces = pieces
        self.extra_traceback = False  # fx would append the node to our own errors' messages
        self.dropping = {n.target for n in graph_module.graph.nodes
                         if n.op == "call_module" and ops.node_kind(n, graph_module).family == ops.DROPOUT}
        """Calls of modules that their operators, not their class, show to drop out (stochastic
        depth written out): off, as dropout layers are."""

    def run_node(self, n: fx.Node) -> object:
        with self._set_current_node(n):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            result = getattr(self, n.op)(n.target, args, kwargs)
        return self.observe(n, args, kwargs, result)

    def observe(self, n: fx.Node, args: tuple, kwargs: dict, result: object) -> object:
        """Called with each node's result; what it returns flows on to the node's users."""
        return result

    def layer(self, target: str) -> Callable[..., object]:
        """The module ``target`` as the first step runs it."""
        if target in self.dropping:
            return _identity
        module = self.fetch_attr(target) if self.pieces is None else self.pieces.layer(target)
        return first_step_module(module)

    def call_module(self, target: str, args: tuple, kwargs: dict) -> object:
        return self.layer(target)(*args, **kwargs)

    def of_first_input(self, n: fx.Node, args: tuple, kwargs: dict) -> Callable[[torch.Tensor], torch.Tensor]:
        """The node's own operation as a function of its first input."""
        if n.op == "call_module":
            return self.layer(n.target)
        if n.op == "call_method":
            return lambda x: getattr(x, n.target)(*args[1:], **kwargs)
        return lambda x: first_step_call(n.target, (x, *args[1:]), kwargs)

    def call_function(self, target: Callable, args: tuple, kwargs: dict) -> object:
        return first_step_call(target, args, kwargs)

    def get_attr(self, target: str, args: tuple, kwargs: dict) -> object:
        value = super().get_attr(target, args, kwargs)
        return value if self.pieces is None else self.pieces.attribute(target, value)


class ProbeRun:
    """What one probe run shares between its forward and backward pass: the progress, the
    memory budget each value is charged to, the gradient hooks that write each watched
    tensor's gradient std into its NodeStats (counted, so progress knows the backward's length),
    and the values that start a gradient path of their own (``start_gradient_path``)."""

    def __init__(self, progress: Progress, budget: MemoryBudget) -> None:
        self.progress = progress
        self.budget = budget
        self.count = 0
        self.sources: list[torch.Tensor] = []

    def start_gradient_path(self, value: torch.Tensor) -> torch.Tensor:
        """``value``, cut loose as a leaf the backward pass differentiates with respect to.
        For values that depend on no float input (an embedding of token ids, a learned
        position table): without it they would get a gradient only through the parameters,
        and the gradients of all the parameters cost as much as the rest of the backward."""
        source = value.detach().requires_grad_()
        self.sources.append(source)
        return source

    def watch(self, tensor: torch.Tensor, stats: NodeStats) -> None:
        if tensor.requires_grad:
            tensor.register_hook(functools.partial(self._record, stats))
            self.count += 1

    def _record(self, stats: NodeStats, grad: torch.Tensor) -> None:
        self.progress.advance()
        stats.grad_std = std_of(grad)


def measure(
    value: torch.Tensor, batch_size: int | None, run: ProbeRun,
    saturating: tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor] | None = None,
) -> NodeStats:
    """The statistics of one value: forward now, its gradient during the backward pass.
    ``saturating`` is (the activation as a function, its input) for saturating activations."""
    run.budget.charge(value)
    stats = tensor_stats(value, batch_size)
    if saturating is not None:
        stats.saturated_fraction = saturated_fraction(*saturating)
    run.watch(value, stats)
    return stats


class Probe(FirstStepInterpreter):
    """Runs the graph once, writing a ``NodeStats`` into ``node.meta[STATS]`` for each float tensor."""

    def __init__(self, graph_module: fx.GraphModule, batch_size: int | None, run: ProbeRun,
                 pieces: PieceByPiece | None = None) -> None:
        super().__init__(graph_module, pieces)
        self.batch_size = batch_size
        self.run_state = run
        self.on_gradient_path: set[fx.Node] = set()
        """Nodes holding float values that depend on a float input or on a gradient source."""
        self.inner_softmax: list[SoftmaxStats] = []
        """The attentions measured inside the module call that ran last."""

    def call_module(self, target: str, args: tuple, kwargs: dict) -> object:
        layer = self.layer(target)
        if not (isinstance(layer, nn.Module) and contains_attention(layer)):
            return layer(*args, **kwargs)
        with attention_inside(layer) as found:
            result = layer(*args, **kwargs)
        self.inner_softmax = found
        return result

    def observe(self, n: fx.Node, args: tuple, kwargs: dict, result: object) -> object:
        self.run_state.progress.advance()
        tensors = tensors_in(result)
        n.meta[CARRIES_TENSOR] = bool(tensors)
        if any(t.is_floating_point() for t in tensors):
            if n.op != "placeholder" and not self.on_gradient_path.intersection(n.all_input_nodes) \
                    and isinstance(result, torch.Tensor):
                result = self.run_state.start_gradient_path(result)
            self.on_gradient_path.add(n)
        kind = ops.node_kind(n, self.module)
        if isinstance(result, torch.Tensor) and result.is_floating_point() and not n.meta.get(PARTIAL_WRITE):
            saturating = None
            if kind.name in ops.SATURATING and isinstance(args[0], torch.Tensor):
                saturating = (self.of_first_input(n, args, kwargs), args[0])
            n.meta[STATS] = measure(result, self.batch_size, self.run_state, saturating)
        softmax = self._softmax(n, kind, args, kwargs)
        if softmax is not None:
            n.meta[SOFTMAX] = softmax
        self.inner_softmax = []
        return result

    def _softmax(self, n: fx.Node, kind: ops.OpKind, args: tuple, kwargs: dict) -> SoftmaxStats | None:
        """How far the node's softmax rows are from uniform: from its logits, recomputed from
        an attention's query and key (``initlint.attention``), or the most peaked attention
        inside a module call (``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``)."""
        if kind.name == "attention":
            return of_sdpa(args, kwargs)
        if kind.name == "softmax" and args and isinstance(args[0], torch.Tensor):
            dim = getattr(self.fetch_attr(n.target), "dim", None) if n.op == "call_module" else \
                kwargs.get("dim", args[1] if len(args) > 1 else None)
            return of_softmax(args[0], dim)
        return most_peaked(self.inner_softmax)


def run_first_step(
    forward: Callable[[list[torch.Tensor], ProbeRun], object],
    inputs: ProbeInputs, seed: int, progress: Progress, forward_steps: int,
    parameters: Iterable[nn.Parameter], budget: MemoryBudget | None = None,
    inputs_require_grad: bool = True,
) -> str | None:
    """One forward (``forward(leaves, run)``, which measures as it goes) and one backward pass
    from a Gaussian cotangent at every floating-point output, without side effects: the RNG is
    restored and gradients come from ``autograd.grad``, never into ``.grad``. Returns a note
    when no gradient could be taken. Without a ``budget``, the free memory of the inputs'
    device is one. The gradient is taken with respect to the inputs, the values ``forward``
    cut loose with ``run.start_gradient_path``, and ``parameters`` (the hooks probe's way to
    reach values that depend on no float input: it cannot cut values loose inside a module).
    With ``inputs_require_grad`` False the inputs reach ``forward`` as a data loader gives them
    (not requiring grad): a model's own code may depend on that (Wav2Vec2 sets ``requires_grad``
    on a view of its input), and only the parameters then start the gradient."""
    devices = [t.device for t in inputs.tensors if t.device.type == "cuda"]
    device = inputs.tensors[0].device if inputs.tensors else torch.device("cpu")
    run = ProbeRun(progress, budget or MemoryBudget(device))
    try:
        # gradients even when the caller runs under no_grad or inference_mode
        with torch.random.fork_rng(devices=devices), torch.inference_mode(False), torch.enable_grad():
            # an input made under inference_mode cannot enter autograd: a copy can
            leaves = [(t.clone() if t.is_inference() else t.detach())
                      .requires_grad_(inputs_require_grad and t.is_floating_point()) for t in inputs.tensors]
            progress.phase("forward", forward_steps)
            outputs = [o for o in backward_outputs(forward(leaves, run)) if o.requires_grad]
            wrt = [t for t in leaves if t.requires_grad] + run.sources + [p for p in parameters if p.requires_grad]
            if not outputs or not wrt:
                return "no gradient: no floating-point output depends on a float input or a trainable parameter"
            generator = torch.Generator(device="cpu").manual_seed(seed + 1)
            cotangents = [torch.randn(o.shape, generator=generator).to(o) for o in outputs]
            progress.phase("backward", run.count)
            torch.autograd.grad(outputs, wrt, cotangents, allow_unused=True)
    finally:
        progress.done()
    return None


def placeholder_values(graph_module: fx.GraphModule, args: tuple, kwargs: dict) -> list[object]:
    """The value of each placeholder, in order: the positional inputs first, then keyword
    inputs by name, else the placeholder's default."""
    values: list[object] = list(args)
    for node in [n for n in graph_module.graph.nodes if n.op == "placeholder"][len(args):]:
        if node.name in kwargs or node.target in kwargs:
            values.append(kwargs.get(node.target, kwargs.get(node.name)))
        elif node.args:
            values.append(node.args[0])
        else:
            raise InitlintError(f"the graph's input {node.target!r} was given no value; pass it with "
                                f"--input {node.target}=SHAPE:DTYPE.")
    return values


def probe(
    graph_module: fx.GraphModule, inputs: ProbeInputs, seed: int, progress: Progress = Progress(),
    budget: MemoryBudget | None = None, pieces: PieceByPiece | None = None,
) -> str | None:
    """Forward and backward through ``graph_module``, statistics into each node's meta;
    ``pieces`` runs a model on the meta device one layer at a time."""
    def forward(leaves: list[torch.Tensor], run: ProbeRun) -> object:
        with pieces.weights_rebuilt_in_backward() if pieces else contextlib.nullcontext():
            args = placeholder_values(graph_module, *inputs.bind(leaves))
            return Probe(graph_module, inputs.batch_size, run, pieces).run(*args)

    try:
        with buffers_preserved(graph_module):
            return run_first_step(forward, inputs, seed, progress, len(graph_module.graph.nodes), (), budget)
    finally:
        if pieces is not None:
            pieces.drop_rebuilt()

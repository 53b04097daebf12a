"""Capture a model with ``torch.export`` (non-strict) and concrete probe inputs, as initlint's graph.

Non-strict export runs the model's own Python with the probe tensors, so keyword inputs, sizes
read from tensors (``self.pe[: x.shape[1]]``) and Hugging Face models capture where symbolic
tracing fails. Its graph is ATen-level; this module turns it into the graph fx tracing gives,
so that every later stage reads one vocabulary:

- a call of a standard layer (``ops.module_kind`` knows it) or of a declared leaf module, with
  one tensor in and one out, becomes one ``call_module`` node, as fx tracing makes it;
- every other operator stays an ATen ``call_function`` node, classified by ``ops``;
- parameters and buffers become ``get_attr`` nodes at their paths in the user's model, and
  constants that export lifted out of the code become ``get_attr`` nodes of their own;
- what the outputs do not depend on (buffer updates such as BatchNorm's counter, shape
  assertions) is dropped: the probe must not change the model;
- each node keeps its module path and the innermost line of the user's own code that made it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from collections.abc import Iterator, Sequence

import torch
import torch.fx as fx
import torch.nn as nn
from torch.export import Dim, ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx.experimental.symbolic_shapes import is_concrete_int
from torch.utils import _pytree as pytree

from initlint import ops
from initlint.inplace import UnfollowableWrite, functionalize_writes, out_of_place
from initlint.inputs import ProbeInputs
from initlint.locations import SourceLocation, is_user_file
from initlint.model_outputs import output_tensors
from initlint.module_calls import OPERATIONS, ModuleCalls, op_name
from initlint.safe_code import safe_root
from initlint.train_flag import TRAINING, follow_training_flag
from initlint.train_or_eval import in_mode, train_else_eval
from initlint.trace import CALL_SITE

WRAPPED = "model"
"""The attribute under which ``_TensorOutputs`` holds the user's model; stripped from paths."""


class CaptureFailure(Exception):
    """torch.export could not capture the model; ``reason`` says why in one plain sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _TensorOutputs(nn.Module):
    """The user's model, its output kept as it is when export can return it (tensors in
    tuples, lists and dicts), else flattened to a dict of its tensors (a Hugging Face output
    that holds a cache object, ``None``s, numbers)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        setattr(self, WRAPPED, model)

    def forward(self, *args: object, **kwargs: object) -> object:
        output = getattr(self, WRAPPED)(*args, **kwargs)
        plain = all(isinstance(leaf, torch.Tensor) for leaf in pytree.tree_leaves(output)) and \
            _is_plain_container(output)
        return output if plain else output_tensors(output)


def _is_plain_container(value: object) -> bool:
    """A tensor, or tuples, lists and dicts of them: what a fixed model can return unchanged."""
    if isinstance(value, torch.Tensor):
        return True
    if type(value) in (tuple, list):
        return all(_is_plain_container(v) for v in value)
    if type(value) is dict:
        return all(_is_plain_container(v) for v in value.values())
    return False


def _plain_reason(error: Exception) -> str:
    """One sentence a user can act on, from export's (often long) error."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    if "data-dependent" in text.lower() or "GuardOnDataDependentSymNode" in type(error).__name__:
        return "the model's Python branches on the values in a tensor (data-dependent control flow)"
    return f"{type(error).__name__}: {first[:300]}"


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """Export logs its failures, prints the partial graph of one to stderr, and warns as it
    goes; initlint reports a failure in one sentence."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _any_size(inputs: ProbeInputs) -> dict[str, object]:
    """Every dimension of every input left for export to keep symbolic where the model allows
    it (``Dim.AUTO``), so that the graph, and the ``model.py`` that ``fix`` writes from it, runs
    at any batch size and sequence length, not only at the probe's: a fixed GPT-2 captured at
    64x32 tokens raised "shape '[64, 32, 192]' is invalid" on a batch of one."""
    every_dimension = lambda tensor: {d: Dim.AUTO for d in range(tensor.dim())}  # noqa: E731
    spec: dict[str, object] = {}
    if inputs.args:
        spec["args"] = tuple(every_dimension(t) for t in inputs.args)
    if inputs.kwargs:
        spec["kwargs"] = {name: every_dimension(t) for name, t in inputs.kwargs.items()}
    return spec


def export_program(model: nn.Module, inputs: ProbeInputs, dynamic_shapes: dict | None = None) -> ExportedProgram:
    try:
        with _quiet_torch(), torch.inference_mode(False), torch.enable_grad():
            return torch.export.export(_TensorOutputs(model), inputs.args, inputs.kwargs,
                                       dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as error:  # export fails in many ways on real models; fx is tried next
        raise CaptureFailure(_plain_reason(error)) from error


def _user_inputs(program: ExportedProgram, inputs: ProbeInputs) -> list[tuple[str, int]]:
    """Export's user-input placeholders, each with the index of its probe tensor."""
    names = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT]
    leaves = pytree.tree_leaves((inputs.args, inputs.kwargs))
    index = {id(t): i for i, t in enumerate(inputs.tensors)}
    return [(name, index[id(leaf)]) for name, leaf in zip(names, leaves)]


def _fixed_sizes(program: ExportedProgram, inputs: ProbeInputs) -> list[str]:
    """The sizes that a program exported at symbolic sizes still holds as numbers, where a
    user expects them free: each input's batch, and the length of integer ones (token ids).
    The model's Python needed them so (a loop over the batch, Mamba's scan over the length)."""
    values = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    fixed = []
    for name, tensor_index in _user_inputs(program, inputs):
        value, spec = values.get(name), inputs.specs[tensor_index]
        if not isinstance(value, torch.Tensor):
            continue
        free = (0, 1) if not value.dtype.is_floating_point else (0,)
        fixed += [f"{spec.name}'s {('batch', 'length')[d]} at {int(value.shape[d])}" for d in free
                  if d < value.dim() and is_concrete_int(value.shape[d])]
    return fixed


def _strip(path: str) -> str | None:
    """A path under the wrapper as a path in the user's model ('' for the model itself), None
    for the placeholder entry that export gives a node it made from metadata (a size read at
    symbolic sizes), which is no module."""
    if path.startswith(WRAPPED + "."):
        return path[len(WRAPPED) + 1:]
    return "" if path in ("", WRAPPED) else None


def _stripped(stack: dict) -> dict:
    """An ``nn_module_stack`` with paths in the user's model."""
    return {key: (stripped, kind) for key, (path, kind) in stack.items() if (stripped := _strip(path)) is not None}


def _user_call_site(stack_trace: str | None) -> SourceLocation | None:
    """The innermost frame of the user's own code in an export stack trace."""
    site = None
    for line in (stack_trace or "").splitlines():
        line = line.strip()
        if line.startswith('File "'):
            filename, _, rest = line[len('File "'):].partition('", line ')
            number = rest.split(",")[0]
            if number.isdigit() and is_user_file(filename):
                site = SourceLocation(filename, int(number))
    return site


class _Converter:
    def __init__(self, program: ExportedProgram, model: nn.Module, leaf_modules: Sequence[type[nn.Module]]) -> None:
        self.program = program
        self.model = model
        self.leaf_modules = leaf_modules
        signature = program.graph_signature
        self.state: dict[str, str] = {}
        """Placeholder name -> path of its parameter, buffer or constant."""
        for spec in signature.input_specs:
            if spec.kind == InputKind.USER_INPUT:
                continue
            if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                self.state[spec.arg.name] = spec.target
            else:
                raise CaptureFailure(f"export lifted a {spec.kind.name.lower()} input, which initlint cannot probe")
        self.user_output_positions = [i for i, s in enumerate(signature.output_specs) if s.kind == OutputKind.USER_OUTPUT]
        self.graph = fx.Graph()
        self.env: dict[fx.Node, fx.Node] = {}
        self.attributes: dict[str, object] = {}

    def _value(self, target: str) -> tuple[str, object]:
        """The attribute path in the new graph, and its value."""
        if target in self.program.constants:
            return f"lifted_constant_{len(self.attributes)}", self.program.constants[target]
        path = _strip(target)
        return path, functools.reduce(getattr, path.split("."), self.model)

    def _arg(self, node: fx.Node) -> fx.Node:
        if node not in self.env and node.name in self.state:
            path, value = self._value(self.state[node.name])
            self.attributes[path] = value
            self.env[node] = self.graph.get_attr(path)
        return self.env[node]

    def convert(self, inputs: ProbeInputs) -> fx.GraphModule:
        _bypass_identity_casts(self.program.graph)
        try:
            functionalize_writes(self.program.graph)
        except UnfollowableWrite as error:
            raise CaptureFailure(str(error)) from error
        nodes = list(self.program.graph.nodes)
        by_name = {n.name: n for n in nodes}
        (returned,) = [n for n in nodes if n.op == "output"]
        outputs = [returned.args[0][i] for i in self.user_output_positions]  # read after the rewrites above
        live = _live_nodes([n for n in outputs if isinstance(n, fx.Node)])
        for name, tensor_index in _user_inputs(self.program, inputs):
            self.env[by_name[name]] = self.graph.placeholder(inputs.specs[tensor_index].name)
        finder = ModuleCalls(self.model, self.leaf_modules, _strip, lambda n: n.name in self.state)
        # the output node counts as a reader: a layer that only it reads (a head) is one call too
        calls = finder.owners(self.program.graph.nodes, live | {returned}, ops_only=False)
        for node in nodes:
            if node not in live or node.op in ("placeholder", "output"):
                continue
            call = calls.get(node)
            if call is None:
                new = self.graph.node_copy(node, self._arg)
                new.target = out_of_place(new.target)
                new.meta["nn_module_stack"] = _stripped(node.meta.get("nn_module_stack") or {})
            elif node is call.result:
                new = self.graph.call_module(call.path, (self._arg(call.external),))
                new.meta["nn_module_stack"] = _stripped(call.stack)
                new.meta["val"] = node.meta.get("val")
                if call.kind is not None:
                    new.meta[ops.KIND] = call.kind
                new.meta[OPERATIONS] = finder.operations(
                    call, lambda n: _strip(self.state.get(n.name, "")), out_of_place)
            else:
                continue
            new.meta[CALL_SITE] = _user_call_site(node.meta.get("stack_trace"))
            self.env[node] = new
        out_spec = self.program.call_spec.out_spec
        results = [self.env[n] if isinstance(n, fx.Node) else n for n in outputs]
        result = pytree.tree_unflatten(results, out_spec) if out_spec is not None else tuple(results)
        self.graph.output(result)
        if follow_training_flag(self.graph):
            self.attributes[TRAINING] = self.model.training
        root = safe_root(self.graph, self.attributes | self._modules_called())
        return fx.GraphModule(root, self.graph, type(self.model).__name__)

    def _modules_called(self) -> dict[str, nn.Module]:
        return {n.target: self.model.get_submodule(n.target) for n in self.graph.nodes if n.op == "call_module"}


def _bypass_identity_casts(graph: fx.Graph) -> None:
    """Let the users of ``x.to(dtype)`` to its own dtype read ``x``. Such a cast returns ``x``
    itself, so export records every later use of ``x`` as a use of the cast: a residual add
    would seem to read from inside the norm (LlamaRMSNorm's ``hidden_states.to(float32)``)."""
    for node in graph.nodes:
        if node.op != "call_function" or op_name(node) not in ("to", "alias") or not node.args:
            continue
        source = node.args[0]
        before, after = getattr(source, "meta", {}).get("val"), node.meta.get("val")
        if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor) and \
                (before.dtype, before.device, before.shape) == (after.dtype, after.device, after.shape):
            node.replace_all_uses_with(source)


def _live_nodes(outputs: list[fx.Node]) -> set[fx.Node]:
    """The nodes the outputs depend on."""
    live: set[fx.Node] = set()
    frontier = list(outputs)
    while frontier:
        node = frontier.pop()
        if node not in live:
            live.add(node)
            frontier.extend(node.all_input_nodes)
    return live


def capture_with_export(
    model: nn.Module, inputs: ProbeInputs, leaf_modules: Sequence[type[nn.Module]] = (), any_size: bool = False,
) -> tuple[fx.GraphModule, str | None]:
    """``model`` as initlint's graph, captured by non-strict export with the probe inputs, and
    a note when it had to be captured in eval mode (a training forward that needs targets, or
    that draws masks with data-dependent sizes, as Wav2Vec2's SpecAugment). With ``any_size``,
    the graph reads its sizes from its inputs where the model allows it (``_any_size``), else
    it holds the probe's, and the note says so. The model's train/eval flags are left as they were."""
    def converted(dynamic_shapes: dict | None) -> tuple[fx.GraphModule, str | None]:
        program = export_program(model, inputs, dynamic_shapes)
        try:
            graph_module = _Converter(program, model, leaf_modules).convert(inputs)
        except CaptureFailure:
            raise
        except Exception as error:
            raise CaptureFailure(
                f"initlint could not read the exported graph ({type(error).__name__}: {error})") from error
        fixed = _fixed_sizes(program, inputs) if dynamic_shapes else []
        return graph_module, (f"the model's Python needs these sizes as numbers, so the fixed model's code holds "
                              f"them and runs at those only: {', '.join(fixed)}" if fixed else None)

    def attempt(training: bool) -> tuple[fx.GraphModule, str | None]:
        """The graph, and a note on the sizes it holds."""
        with in_mode(model, training):
            if any_size:
                try:
                    return converted(_any_size(inputs))
                except CaptureFailure as failure:  # fixed sizes capture more models
                    return converted(None)[0], (
                        f"torch.export could not keep the input sizes symbolic ({failure.reason}), so the fixed "
                        "model's code holds the planned sizes and runs at those only")
            return converted(None)

    (graph_module, sizes_note), eval_note = train_else_eval(
        attempt, "captured", "BatchNorm still normalizes with batch statistics and dropout is off, as in training; "
                             "other train-only code paths are not seen")
    return graph_module, "; ".join(filter(None, [eval_note, sizes_note])) or None

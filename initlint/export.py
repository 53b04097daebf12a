"""Write a fixed model as a folder: generated Python code, a plain state dict, the plan.

The code is generated from the patched GraphModule: a class whose ``__init__`` rebuilds each
layer from its constructor arguments (``torch.nn.Linear(in_features=..., ...)``, checked by
comparing reprs) and whose ``forward`` is fx's generated code. Weights go in a state dict that
loads with ``torch.load(..., weights_only=True)``: no pickled code anywhere.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import math
import os
import textwrap
import types
from pathlib import Path
from typing import NamedTuple

import torch
import torch.fx as fx
import torch.nn as nn

from initlint import ops
from initlint.errors import InitlintError
from initlint.model_outputs import relative_difference
from initlint.module_calls import OPERATIONS
from initlint.output import refuse_existing_folder, write_folder_atomically
from initlint.rebuild import constructor, refuse_hooks
from initlint.renorm_layer import RenormLayer, StochasticLayer
from initlint.safe_code import CodeNotWritable, check_graph, is_dotted_identifier, is_identifier
from initlint.train_flag import TRAINING, follow_training_flag

CODE_FILE, WEIGHTS_FILE, PLAN_FILE, FOLDED_FILE = "model.py", "weights.pt", "renorm.json", "folded_state_dict.pt"


def _import_line(name: str, value: object) -> str:
    """Python that binds ``name`` to the global that fx's generated code refers to."""
    if not is_identifier(name):
        raise CodeNotWritable(f"the traced code refers to a global named {name!r}, which generated code cannot write")
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} = float({str(value)!r})"
    if isinstance(value, str):  # a string annotation (``from __future__ import annotations``)
        return f"{name} = {value!r}"
    if value is type(None):
        return f"{name} = type(None)"
    if isinstance(value, types.ModuleType) and is_dotted_identifier(value.__name__):
        return f"import {value.__name__} as {name}"
    if getattr(value, "__module__", None) == "builtins" and getattr(value, "__name__", None) == name:
        return ""
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if not (is_dotted_identifier(module) and is_identifier(qualname)) or module.startswith("initlint_target_"):
        raise CodeNotWritable(f"the traced code uses {name!r} ({value!r}), which generated code cannot import")
    return f"from {module} import {qualname} as {name}"


def _registering_import(target: object) -> str:
    """The import that registers a custom operator ``target`` calls (``torch.ops.transformers.
    grouped_mm_fallback``, which Mixtral's experts run under export), or "" for torch's own: a
    fresh ``initlint check DIR`` has only what model.py imports."""
    if isinstance(target, torch._ops.OpOverload):
        name = target._schema.name
    elif isinstance(target, torch._ops.OpOverloadPacket):  # fx records ``torch.ops.ns.op(x)`` so
        name = target._qualified_op_name
    else:
        return ""
    definition = torch._library.custom_ops.OPDEFS.get(name)
    module = getattr(getattr(definition, "_init_fn", None), "__module__", None)
    if module is None:
        return ""  # registered by torch, or by a C++ extension that model.py cannot name
    if not is_dotted_identifier(module) or module.startswith("initlint_target_") or module == "__main__":
        raise CodeNotWritable(f"the traced code calls the custom operator {name}, registered in {module!r}, "
                              "which generated code cannot import")
    return f"import {module}"


def _traced_alone(module: nn.Module) -> fx.Graph | None:
    """The operators of a layer the trace kept whole because its library declares it
    untraceable in a whole model (timm's ``BatchNormAct2d`` in MobileViT), traced on their own
    with the ``torch.nn`` layers inside as calls and the mode read from ``training``; None where
    that fails too. A copy is traced: fx runs in-place updates of a buffer on the real tensor."""
    try:
        graph = fx.Tracer().trace(copy.deepcopy(module))
    except Exception:
        return None
    follow_training_flag(graph)
    return graph


def _tied_parameters(root: nn.Module) -> list[tuple[str, str]]:
    """(alias, first path) for each parameter reachable under more than one path."""
    first: dict[int, str] = {}
    tied = []
    for path, parameter in root.named_parameters(remove_duplicate=False):
        if id(parameter) in first:
            tied.append((path, first[id(parameter)]))
        else:
            first[id(parameter)] = path
    return tied


def _empty(tensor: torch.Tensor) -> str:
    """An expression for an uninitialised tensor like ``tensor``; its values come from weights.pt."""
    empty = f"torch.empty({tuple(tensor.shape)}, dtype={tensor.dtype})"
    if isinstance(tensor, nn.Parameter):  # an integer Parameter cannot require gradients
        empty = f"nn.Parameter({empty}, requires_grad={tensor.requires_grad})"
    return empty


_WRAP = re.compile(r'torch\.fx\._symbolic_trace\.wrap\("[A-Za-z_][A-Za-z0-9_]*"\)')
"""The line fx writes before ``forward`` for a function it keeps as a leaf (``math.sqrt`` of a
size): ``wrap`` refuses to run anywhere but at a module's top level."""


def _split_wraps(source: str, wraps: list[str]) -> str:
    """``source``'s method, its ``wrap(...)`` lines moved to ``wraps``, each checked."""
    preamble, found, method = source.partition("def forward")
    for line in filter(None, map(str.strip, preamble.splitlines())):
        if not _WRAP.fullmatch(line):
            raise CodeNotWritable(f"torch.fx wrote {line!r} before the forward, which generated code cannot keep")
        wraps.append(line)
    return (found + method).strip()


_DRAWS_LIKE = {torch.ops.aten.rand.default: torch.rand_like, torch.ops.aten.randn.default: torch.randn_like}
"""Random draws that torch.export records at a literal size, and the draw like a given tensor."""


def _following_the_input(graph: fx.Graph) -> fx.Graph:
    """A copy of ``graph`` that makes its tensors where its first input is, as the model did.

    torch.export records each tensor a forward makes (positions from ``arange``, masks) on the
    device it ran on: written as such, the fixed model failed once moved (``.cuda()``: "Tensor
    on device ... is not on the expected device cpu"). Those calls now take the first input's
    device. Random draws (ViTMAE's choice of patches, stochastic depth's mask) are drawn like
    an empty tensor made from that input: fx, tracing the generated code (``initlint check
    DIR``), then records the draw, where a call at a literal size, without a traced argument,
    would run once, and its numbers stay fixed."""
    copied = fx.Graph()
    copied.output(copied.graph_copy(graph, {}))
    inputs = [node for node in copied.nodes if node.op == "placeholder"]
    if not inputs:
        return copied
    device = None
    for node in list(copied.nodes):
        like = _DRAWS_LIKE.get(node.target)
        if like is not None:
            dtype = node.kwargs.get("dtype") or torch.get_default_dtype()
            with copied.inserting_before(node):
                empty = copied.call_method("new_empty", (inputs[0], node.args[0]), {"dtype": dtype})
                drawn = copied.call_function(like, (empty,))
            node.replace_all_uses_with(drawn)
            copied.erase_node(node)
        elif node.op == "call_function" and isinstance(node.kwargs.get("device"), torch.device):
            if device is None:
                with copied.inserting_after(inputs[-1]):
                    device = copied.call_function(getattr, (inputs[0], "device"))
            node.kwargs = {**node.kwargs, "device": device}
    return copied


def _off_in_eval(method: str) -> str:
    """A stochastic layer's ``forward`` (its operators recorded in training mode, random numbers
    and all) that returns its input unchanged in eval mode, as stochastic depth and dropout do.
    The generated model is compared with the fixed one in eval mode before it is written."""
    signature, newline, body = method.partition("\n")
    argument = re.match(r"def forward\(self, (\w+)", signature)  # fx may annotate it: `x : torch.Tensor`
    if argument is None:
        raise CodeNotWritable(f"cannot read the input of a stochastic layer's forward from {signature!r}")
    return f"{signature}{newline}    if not self.training:\n        return {argument.group(1)}\n{body}"


class GeneratedCode(NamedTuple):
    source: str
    """``model.py``."""
    buffers: dict[str, torch.Tensor]
    """The buffers it places one by one, as plain ones, by path: ``weights.pt`` holds their
    values even where ``patched`` keeps them out of its state dict (LeViT's non-persistent
    attention_bias_idxs); a layer it rebuilds from its constructor has its class's own."""


def generate_code(patched: fx.GraphModule, provenance: str) -> GeneratedCode:
    """``model.py``: every name in it is checked, and ``provenance`` is written through ``repr()``."""
    check_graph(patched.graph)
    python = _following_the_input(patched.graph).python_code(root_module="self")
    globals_used = dict(python.globals)
    wraps: list[str] = []  # fx's wrap() calls: they must run at a module's top level
    parameters = dict(patched.named_parameters(remove_duplicate=False))  # a tied weight under each of its names
    classes: dict[str, str] = {}  # forward source -> class name
    bases: dict[str, str] = {}  # class name -> its base class
    lines: list[str] = []
    buffers: dict[str, torch.Tensor] = {}
    graphs = [patched.graph]
    for node in patched.graph.nodes:
        if node.op == "call_module":
            module = patched.get_submodule(node.target)
            try:
                lines.append(f"_place(self, {node.target!r}, {constructor(node.target, module)})")
                continue
            except CodeNotWritable:
                refuse_hooks(node.target, module)
                operations = node.meta.get(OPERATIONS) or _traced_alone(module)
                if operations is None:
                    raise
            check_graph(operations)
            graphs.append(operations)
            code = _following_the_input(operations).python_code(root_module="self")
            globals_used.update(code.globals)
            method = _split_wraps(code.src, wraps)
            stochastic = node.meta.get(ops.KIND) is ops.DROP_PATH
            if stochastic:
                method = _off_in_eval(method)
            name = classes.setdefault(method, f"CapturedOperations{len(classes)}")
            bases[name] = "StochasticLayer" if stochastic else "nn.Module"
            lines.append(f"_place(self, {node.target!r}, {name}())")
            lines += [f"_place(self, {f'{node.target}.{call.target}'!r}, "
                      f"{constructor(f'{node.target}.{call.target}', module.get_submodule(call.target))})"
                      for call in operations.nodes if call.op == "call_module"]
            lines += [f"_place(self, {f'{node.target}.{path}'!r}, {_empty(tensor)})"
                      for path, tensor in [*module.named_parameters(), *module.named_buffers()]]
            buffers.update((f"{node.target}.{path}", tensor) for path, tensor in module.named_buffers())
        elif node.op == "get_attr" and node.target != TRAINING:  # every nn.Module has ``training``
            if node.target in parameters:
                tensor = patched.get_parameter(node.target)
            else:
                tensor = buffers[node.target] = patched.get_buffer(node.target)
            lines.append(f"_place(self, {node.target!r}, {_empty(tensor)})")
    lines += [f"_tie(self, {alias!r}, {source!r})" for alias, source in _tied_parameters(patched)]
    imports = sorted({line for n, v in globals_used.items() if (line := _import_line(n, v))})
    imports += sorted({line for graph in graphs for node in graph.nodes
                       if node.op == "call_function" and (line := _registering_import(node.target))})
    init = textwrap.indent("\n".join(lines) or "pass", " " * 8)
    forward = textwrap.indent(_split_wraps(python.src, wraps), " " * 4)
    captured = "".join(
        f"\n\nclass {name}({bases[name]}):\n    \"\"\"Operators captured from a layer whose class code cannot rebuild.\"\"\"\n"
        f"{textwrap.indent(source, ' ' * 4)}\n" for source, name in classes.items())
    own_classes = textwrap.indent("\n\n".join(inspect.getsource(c) for c in (RenormLayer, StochasticLayer)), "    ")
    docstring = f"Generated by initlint from {provenance}. ``build()`` returns the fixed model."
    source = f'''{docstring!r}

from pathlib import Path

import torch
from torch import nn
{chr(10).join(imports)}
{chr(10).join(dict.fromkeys(wraps))}


try:  # initlint's own classes, so that `initlint check` recognizes renorm and stochastic layers
    from initlint.renorm_layer import RenormLayer, StochasticLayer
except ImportError:
{own_classes}

def _place(root: nn.Module, path: str, value) -> None:
    """Set ``value`` at the dotted ``path``, creating plain containers on the way."""
    *parents, name = path.split(".")
    for part in parents:
        if not hasattr(root, part):
            root.add_module(part, nn.Module())
        root = getattr(root, part)
    if isinstance(value, nn.Module):
        root.add_module(name, value)
    elif isinstance(value, nn.Parameter):
        root.register_parameter(name, value)
    else:
        root.register_buffer(name, value)


{captured}

def _tie(root: nn.Module, path: str, source: str) -> None:
    """Make the parameter at ``path`` the very Parameter at ``source``: tied weights stay tied."""
    *parents, name = path.split(".")
    setattr(root.get_submodule(".".join(parents)), name, root.get_parameter(source))


class FixedModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
{init}

{forward}


def _take_dtypes(root: nn.Module, weights: dict) -> None:
    """Give each tensor the dtype it was saved in (a bfloat16 model stays one): the layers are
    built in torch's default dtype, and loading keeps a tensor's own."""
    for path, tensor in [*root.named_parameters(), *root.named_buffers()]:
        if path in weights and tensor.dtype != weights[path].dtype:
            tensor.data = tensor.data.to(weights[path].dtype)


def build() -> nn.Module:
    model = FixedModel()
    weights = torch.load(Path(__file__).with_name({WEIGHTS_FILE!r}), weights_only=True)
    _take_dtypes(model, weights)
    model.load_state_dict(weights)
    return model
'''
    return GeneratedCode(source, buffers)


FIX_FILES = frozenset({CODE_FILE, WEIGHTS_FILE, PLAN_FILE, FOLDED_FILE})
BYTECODE_FOLDER = "__pycache__"
"""Python writes it beside model.py when ``initlint check FOLDER`` imports the code."""


def is_fix_output(folder: Path) -> bool:
    """Whether ``folder`` holds what ``fix`` writes and nothing else: its plan, with initlint's
    marker, and no file of the user's that replacing the folder would lose."""
    try:
        plan = json.loads((folder / PLAN_FILE).read_text(encoding="utf-8"))
        entries = list(folder.iterdir())
        bytecode = list((folder / BYTECODE_FOLDER).iterdir()) if (folder / BYTECODE_FOLDER).is_dir() else []
    except (OSError, ValueError):
        return False
    own_files = all(
        entry.name in FIX_FILES and entry.is_file() and not entry.is_symlink() for entry in entries
        if entry.name != BYTECODE_FOLDER
    )
    own_bytecode = all(
        entry.name.startswith(Path(CODE_FILE).stem + ".") and entry.suffix == ".pyc" and entry.is_file()
        for entry in bytecode
    )
    return isinstance(plan, dict) and isinstance(plan.get("initlint"), str) and own_files and own_bytecode


def refuse_existing_fix_output(folder: str | os.PathLike, force: bool) -> None:
    """Fail before any work unless ``folder`` may be written: new, or (with ``force``) empty or
    a folder that ``fix`` wrote before."""
    refuse_existing_folder(folder, force, is_fix_output)


def _plain(state_dict: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state_dict.items()}


GENERATED_TOLERANCE = 1e-4
"""How far model.py's output may be from the fixed model's, in its std: the same operators on the
same weights, apart from float reassociation."""


def _runs(folder: Path, result) -> None:
    """Import the written folder as ``initlint check FOLDER`` will, build the model, load its
    weights, probe it and compare its output with the fixed model's: fix never leaves a folder
    behind that does not run, or that computes something else (a layer rebuilt without a hook)."""
    from initlint.api import CheckOptions, ModelSource, analyse
    from initlint.load import load_target

    way_out = ("Please report it; --fold still fixes your own model class through the Python API "
               "(initlint.fix(model, fold=True)).")
    try:
        loaded = load_target(str(folder))
        planned = loaded.planned
        analyse(loaded.model, (), CheckOptions(input_shapes=planned.shapes or None, inputs=planned.named), ModelSource())
    except InitlintError as error:
        raise InitlintError(f"the fixed model initlint generated does not run, so nothing was written ({error}). "
                            f"{way_out}") from error
    device = next(iter(result.analysed.inputs.tensors), torch.empty(0)).device
    difference = relative_difference(loaded.model.to(device), result.patched, result.analysed.inputs)
    if difference > GENERATED_TOLERANCE:
        raise InitlintError(f"the fixed model initlint generated computes something else than the model it fixed "
                            f"(outputs {difference:.2g} of their std apart), so nothing was written. {way_out}")


def write_fix(folder: str | os.PathLike, result, target: str, force: bool) -> str | None:
    """The folder ``initlint fix`` writes; ``initlint check FOLDER`` loads it back. With folded
    weights, a model whose code cannot be generated still gets them (and the plan): returns
    why model.py is missing then."""
    plan = result.plan_document(target)
    try:
        code = generate_code(result.patched, target)
        files: dict[str, object] = {CODE_FILE: code.source,
                                    WEIGHTS_FILE: _plain({**result.patched.state_dict(), **code.buffers})}
        missing_code = None
    except CodeNotWritable as error:
        if result.folded is None:
            raise
        files, missing_code = {}, error.reason
        plan["code"] = f"not written: {missing_code}"
    files[PLAN_FILE] = plan
    if result.folded is not None:
        files[FOLDED_FILE] = _plain(result.folded.model.state_dict())
    write_folder_atomically(folder, files, force, is_fix_output,
                            (lambda staging: _runs(staging, result)) if missing_code is None else lambda staging: None)
    return missing_code

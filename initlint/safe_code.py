"""Guards for generated code: no text from a name, a path or a value is ever pasted in unchecked.

torch.fx pastes module paths into the code it compiles (``getattr(self.d, "<key>")``, unescaped),
both when a GraphModule is built and in the ``model.py`` that ``fix`` writes, and writes
constants with ``repr()``, which a user's class controls. So every path that reaches code is
made of checked identifiers (others are renamed before fx compiles anything), every constant
is of a type whose ``repr`` is a literal, every import names checked identifiers, and every
constructor expression is a literal call.
"""

from __future__ import annotations

import ast
import functools
import itertools
import keyword
from collections.abc import Mapping

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.immutable_collections import immutable_dict, immutable_list

from initlint.errors import InitlintError

class CodeNotWritable(InitlintError):
    """``fix`` cannot write code for this model; ``reason`` says why. The message adds the way
    out: ``--fold`` writes a state dict for the user's own class instead."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; use --fold to write a state dict for your own model class instead.")
        self.reason = reason


_LITERAL_TYPES = (
    type(None), bool, int, float, complex, str, bytes, type(Ellipsis),
    torch.dtype, torch.device, torch.layout, torch.memory_format,
)
"""Constants whose ``repr`` is Python that rebuilds them and can do nothing else."""


def is_identifier(name: object) -> bool:
    """An ASCII Python identifier that is not a keyword: safe to write as a name."""
    return isinstance(name, str) and name.isascii() and name.isidentifier() and not keyword.iskeyword(name)


def is_dotted_identifier(name: object) -> bool:
    return isinstance(name, str) and all(is_identifier(part) for part in name.split("."))


def _is_safe_path(path: str) -> bool:
    """Each part an identifier or a decimal index: fx then writes ``self.a.b`` or ``getattr(self.a, "0")``."""
    return all(is_identifier(part) or (part.isascii() and part.isdigit()) for part in path.split("."))


ORIGINAL_PATH = "initlint_original_path"
"""A renamed node's module or attribute path in the user's model."""


def safe_root(graph: fx.Graph, root: nn.Module | Mapping[str, object]) -> nn.Module | dict[str, object]:
    """The root to build ``fx.GraphModule(root, graph)`` from without pasting unsafe text into
    the code fx compiles. ``root`` is the module the paths of ``graph`` resolve in, or a table
    of path -> value. It is returned as it is when every module and attribute path that
    ``graph`` uses is safe to write; else as a table in which each unsafe path has a fresh
    top-level name (the node keeps its original path in ``meta[ORIGINAL_PATH]``)."""
    used = {node.target for node in graph.nodes if node.op in ("call_module", "get_attr")}
    if all(_is_safe_path(path) for path in used):
        return root
    taken = {path.partition(".")[0] for path in used}
    fresh = (name for i in itertools.count() if (name := f"renamed_{i}") not in taken)
    renamed = {path: path if _is_safe_path(path) else next(fresh) for path in sorted(used)}
    for node in graph.nodes:
        if node.op in ("call_module", "get_attr") and renamed[node.target] != node.target:
            node.meta[ORIGINAL_PATH] = node.target
            node.target = renamed[node.target]
    def value(path: str) -> object:
        return root[path] if isinstance(root, Mapping) else functools.reduce(getattr, path.split("."), root)
    return {new: value(old) for old, new in renamed.items()}


def check_paths(graph: fx.Graph) -> None:
    """Refuse a graph whose module paths fx would paste into code unescaped."""
    for node in graph.nodes:
        if node.op in ("call_module", "get_attr") and not _is_safe_path(node.target):
            raise CodeNotWritable(f"the module path {node.target!r} cannot be written as code")


def _check_constant(value: object, node: fx.Node) -> None:
    if isinstance(value, (fx.Node, _LITERAL_TYPES)):
        return
    if type(value) in (tuple, list, immutable_list, torch.Size) or (isinstance(value, tuple) and hasattr(value, "_fields")):
        for item in value:
            _check_constant(item, node)
    elif type(value) in (dict, immutable_dict):
        for key, item in value.items():
            _check_constant(key, node)
            _check_constant(item, node)
    elif type(value) is slice:
        for item in (value.start, value.stop, value.step):
            _check_constant(item, node)
    else:
        raise CodeNotWritable(
            f"the traced code passes a {type(value).__name__} constant to {node.name!r}, which generated code "
            "cannot write safely"
        )


def check_graph(graph: fx.Graph) -> None:
    """Refuse a graph whose code would paste unchecked text: a path or a method name that is
    not made of identifiers, or a constant whose ``repr`` is not a literal."""
    check_paths(graph)
    for node in graph.nodes:
        if node.op == "call_method" and not is_identifier(node.target):
            raise CodeNotWritable(f"the traced code calls a method named {node.target!r}, which generated code cannot write")
        _check_constant(node.args, node)
        _check_constant(node.kwargs, node)


def is_literal_call(expression: str, callee: str) -> bool:
    """Whether ``expression`` is ``callee.<Name>(literal, ..., key=literal)`` and nothing else."""
    try:
        call = ast.parse(expression, mode="eval").body
    except SyntaxError:
        return False
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
        return False
    if ast.unparse(call.func.value) != callee or not is_identifier(call.func.attr):
        return False
    try:
        for argument in [*call.args, *(k.value for k in call.keywords)]:
            ast.literal_eval(argument)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return all(k.arg is not None for k in call.keywords)

"""Probe inputs: parse ``--input-shape``, infer shapes from the first layer, draw the tensors.

Inference looks, for each input of the traced graph, for the first layer that consumes it
(through reshapes and other structural ops): ``Linear`` gives ``(B, in_features)``, ``ConvNd``
gives ``(B, in_channels, S, ...)``, ``Embedding`` gives ``(B, T)`` integer ids. The defaults below
are documented in the README.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.fx as fx
import torch.nn as nn

from initlint import ops
from initlint.errors import InitlintError

DEFAULT_BATCH = 8
"""Probe batch size when shapes are inferred: enough samples for per-feature variances."""
DEFAULT_SPATIAL = {1: 64, 2: 32, 3: 16}
"""Inferred length / side / edge for Conv1d, Conv2d, Conv3d inputs."""
DEFAULT_TOKENS = 32
"""Inferred sequence length for an Embedding input."""


DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "bool": torch.bool,
}
"""The dtypes an input may be given with (``--input NAME=SHAPE:DTYPE``)."""


@dataclass
class InputSpec:
    """One probe input: what to draw, and how the model takes it (by position or by keyword)."""

    name: str
    shape: tuple[int, ...]
    integer_high: int | None = None
    """For integer ids: draw uniformly from [0, integer_high)."""
    inferred_from: str | None = None
    dtype: torch.dtype | None = None
    """None: the model's own floating dtype (N(0, 1) values); else one of ``DTYPES``."""
    keyword: bool = False
    """Passed as ``forward(name=tensor)`` rather than by position."""
    fill: int | None = None
    """Every element is this constant (an all-ones attention mask) instead of random."""

    @property
    def is_integer(self) -> bool:
        return self.integer_high is not None or (self.dtype is not None and not self.dtype.is_floating_point)

    def storage_dtype(self, float_dtype: torch.dtype) -> torch.dtype:
        """The dtype of the drawn tensor, given the model's floating dtype."""
        if self.dtype is not None:
            return self.dtype
        return torch.int64 if self.integer_high is not None else float_dtype

    def to_dict(self) -> dict:
        data: dict = {"name": self.name, "shape": list(self.shape)}
        data["dtype"] = str(self.dtype).removeprefix("torch.") if self.dtype is not None else (
            "int64" if self.integer_high is not None else "float")
        data["keyword"] = self.keyword
        if self.integer_high is not None:
            data["high"] = self.integer_high
        if self.fill is not None:
            data["fill"] = self.fill
        if self.inferred_from:
            data["inferred_from"] = self.inferred_from
        return data


@dataclass
class ProbeInputs:
    """The drawn (or given) probe batch, one tensor per spec, in the specs' order."""

    specs: list[InputSpec]
    tensors: list[torch.Tensor] = field(default_factory=list)

    @property
    def batch_size(self) -> int | None:
        return self.tensors[0].shape[0] if self.tensors and self.tensors[0].dim() else None

    def bind(self, tensors: Sequence[torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
        """``tensors`` (one per spec, e.g. copies that require grad) as ``(args, kwargs)``."""
        args = tuple(t for spec, t in zip(self.specs, tensors) if not spec.keyword)
        kwargs = {spec.name: t for spec, t in zip(self.specs, tensors) if spec.keyword}
        return args, kwargs

    @property
    def args(self) -> tuple[torch.Tensor, ...]:
        """The positional inputs, for ``model(*args, **kwargs)`` or ``torch.export.export``."""
        return self.bind(self.tensors)[0]

    @property
    def kwargs(self) -> dict[str, torch.Tensor]:
        """The keyword inputs, by name."""
        return self.bind(self.tensors)[1]


def parse_shape(text: str) -> tuple[int, ...]:
    """'8,3,224,224' -> (8, 3, 224, 224); anything else is a usage error."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise InitlintError(
            f"input shape {text!r} is not a comma-separated list of positive integers; "
            "write it like --input-shape 8,3,224,224 (batch first)."
        )
    return shape


_INPUT_FORM = "--input NAME=SHAPE:DTYPE, e.g. --input input_ids=8,32:int64"


def parse_named_input(name: str, text: str) -> InputSpec:
    """``input_ids``, ``'8,32:int64'`` -> a keyword spec; without a dtype, the model's floating
    dtype (float32 for most models: a half-precision model gets half-precision inputs)."""
    if not name.isidentifier():
        raise InitlintError(f"input name {name!r} is not a Python identifier; write {_INPUT_FORM}.")
    shape_text, _, dtype_text = text.partition(":")
    dtype_text = dtype_text.strip()
    if dtype_text and dtype_text not in DTYPES:
        raise InitlintError(
            f"input {name!r}: dtype {dtype_text!r} is not one of {', '.join(DTYPES)}; write {_INPUT_FORM}."
        )
    try:
        shape = parse_shape(shape_text)
    except InitlintError:
        raise InitlintError(
            f"input {name!r}: shape {shape_text!r} is not a comma-separated list of positive "
            f"integers; write {_INPUT_FORM}."
        ) from None
    return InputSpec(name, shape, dtype=DTYPES[dtype_text] if dtype_text else None, keyword=True)


def parse_input_option(text: str) -> InputSpec:
    """``'input_ids=8,32:int64'`` (the ``--input`` flag) -> a keyword spec."""
    name, sep, rest = text.partition("=")
    if not sep:
        raise InitlintError(f"--input {text!r} has no '='; write {_INPUT_FORM}.")
    return parse_named_input(name.strip(), rest.strip())


def required_inputs(graph_module: fx.GraphModule) -> list[fx.Node]:
    """Placeholders without a default value: the inputs a probe must supply."""
    return [n for n in graph_module.graph.nodes if n.op == "placeholder" and not n.args]


def refuse_mapping_inputs(graph_module: fx.GraphModule) -> None:
    """A forward that reads an input by a string key (``batch["x"]``) takes a mapping, which
    the probe cannot draw: say so, and how to mend it, before a probe fails on it."""
    for node in required_inputs(graph_module):
        keys = [user.args[1] for user in node.users if user.op == "call_function"
                and user.target is operator.getitem and isinstance(user.args[1], str)]
        if keys:
            raise InitlintError(
                f"forward reads its input {node.target!r} as a mapping ({node.target}[{keys[0]!r}]), and initlint "
                "probes with tensors; check a factory that returns a wrapper whose forward takes the tensors "
                f"themselves, e.g. forward(self, {', '.join(map(str, keys))}) returning "
                f"model({{{', '.join(f'{k!r}: {k}' for k in keys)}}}), and give each with --input NAME=SHAPE:DTYPE."
            )


@dataclass(frozen=True)
class _FirstLayer:
    """What an input's first layer tells about its shape."""

    description: str
    family: str  # "linear" | "conv" | "embedding"
    size: int  # in_features, in_channels, or num_embeddings
    spatial_dims: int = 0


def _from_module(module: nn.Module) -> _FirstLayer | None:
    where = f"its first layer, {type(module).__name__}"
    if isinstance(module, nn.Linear):
        return _FirstLayer(where, "linear", module.in_features)
    if isinstance(module, nn.modules.conv._ConvNd):
        return _FirstLayer(where, "conv", module.in_channels, len(module.kernel_size))
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return _FirstLayer(where, "embedding", module.num_embeddings)
    return None


def _from_function(node: fx.Node, root: nn.Module) -> _FirstLayer | None:
    """A functional layer whose weight is a parameter of the model (e.g. a bare ``nn.Linear`` root,
    or the embeddings of a model that torch.export captured and ``fix`` wrote out)."""
    kind = ops.function_kind(node.target).name
    if kind not in ("linear", "conv", "embedding"):
        return None
    weight = _weight_argument(node, kind)
    if weight is None:
        return None
    shape = fx.graph_module._get_attr(root, weight.target).shape  # a parameter or a buffer
    where = f"its first layer, {getattr(node.target, '__name__', kind)}"
    if kind == "linear":
        return _FirstLayer(where, "linear", shape[1])
    if kind == "conv":
        groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
        return _FirstLayer(where, "conv", shape[1] * groups, len(shape) - 2)
    if kind == "embedding":
        return _FirstLayer(where, "embedding", shape[0])
    return None


def _weight_argument(node: fx.Node, kind: str) -> fx.Node | None:
    """The parameter a functional layer reads: its second argument, but for an embedding, whose
    ATen form takes the weight first (``aten.embedding(weight, ids)``, where ``F.embedding``
    takes the ids first), the first parameter among its first two."""
    candidates = node.args[:2] if kind == "embedding" else node.args[1:2]
    candidates = (*candidates, node.kwargs.get("weight"))
    return next((a for a in candidates if isinstance(a, fx.Node) and a.op == "get_attr"), None)


def _vocabulary(node: fx.Node, root: nn.Module) -> int | None:
    """The vocabulary size of the embedding that first reads input ``node``, or None."""
    layer = _first_layer(node, root)
    return layer.size if layer is not None and layer.family == "embedding" else None


def with_vocabularies(specs: list[InputSpec], graph_module: fx.GraphModule) -> list[InputSpec]:
    """``specs`` with integer inputs of no known vocabulary given that of the embedding that
    first reads them in the traced graph. A model's modules tell most vocabularies before the
    capture; a functional embedding does not (``F.embedding(ids, self.table)``, or the code
    ``fix`` writes for a model that torch.export captured), and ids drawn as zeros would make
    every sample alike."""
    placeholders = {n.target: n for n in graph_module.graph.nodes if n.op == "placeholder"}
    found = []
    for spec in specs:
        node = placeholders.get(spec.name)
        if spec.is_integer and spec.dtype != torch.bool and spec.integer_high is None and spec.fill is None \
                and node is not None:
            spec = replace(spec, integer_high=_vocabulary(node, graph_module))
        found.append(spec)
    return found


_ELEMENTWISE = frozenset({operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub,
                          torch.mul, torch.div})


def _with_constants(node: fx.Node) -> bool:
    """Arithmetic with buffers, parameters or numbers only (``(x - self.mean) / self.std``): it
    keeps the input's shape, so the layer after it tells the shape."""
    return node.op == "call_function" and node.target in _ELEMENTWISE and sum(
        isinstance(a, fx.Node) and a.op != "get_attr" for a in node.args) == 1


def _first_layer(node: fx.Node, root: nn.Module) -> _FirstLayer | None:
    """The Linear/Conv/Embedding that first consumes ``node``, looking through reshapes."""
    frontier, seen = list(node.users), set()
    while frontier:
        user = frontier.pop(0)
        if user in seen:
            continue
        seen.add(user)
        if user.op == "call_module":
            layer = _from_module(root.get_submodule(user.target))
        else:
            layer = _from_function(user, root) if user.op == "call_function" else None
        if layer is not None:
            return layer
        if ops.node_kind(user, root).family in (ops.STRUCTURAL, ops.DROPOUT) or _with_constants(user):
            frontier.extend(user.users)
    return None


def infer_spec(node: fx.Node, root: nn.Module, batch: int = DEFAULT_BATCH) -> InputSpec:
    return _spec_from(node.name, _first_layer(node, root), batch)


def _spec_from(name: str, layer: _FirstLayer | None, batch: int) -> InputSpec:
    if layer is None:
        raise InitlintError(
            f"cannot infer the shape of input {name!r}: no Linear, Conv or Embedding layer "
            "consumes it directly. Pass its shape with --input-shape (batch first, e.g. "
            "--input-shape 8,3,224,224; once per input), or input_shapes=[...] in Python."
        )
    if layer.family == "linear":
        return InputSpec(name, (batch, layer.size), inferred_from=layer.description)
    if layer.family == "conv":
        spatial = (DEFAULT_SPATIAL[layer.spatial_dims],) * layer.spatial_dims
        return InputSpec(name, (batch, layer.size, *spatial), inferred_from=layer.description)
    return InputSpec(name, (batch, DEFAULT_TOKENS), integer_high=layer.size, inferred_from=layer.description)


def _checked_count(names: list[str], shapes: list[tuple[int, ...]]) -> None:
    if len(shapes) != len(names):
        raise InitlintError(
            f"the model takes {len(names)} input(s) ({', '.join(names)}) but {len(shapes)} "
            "--input-shape value(s) were given; pass one --input-shape per input, in order."
        )


def specs_for(
    graph_module: fx.GraphModule, shapes: list[tuple[int, ...]] | None, batch: int = DEFAULT_BATCH
) -> list[InputSpec]:
    """One spec per required input: from the given shapes, else inferred with ``batch`` samples."""
    nodes = required_inputs(graph_module)
    if not shapes:
        return [infer_spec(node, graph_module, batch) for node in nodes]
    _checked_count([n.name for n in nodes], shapes)
    specs = []
    for node, shape in zip(nodes, shapes):
        specs.append(InputSpec(node.name, shape, integer_high=_vocabulary(node, graph_module)))
    return specs


def specs_without_graph(
    model: nn.Module, shapes: list[tuple[int, ...]] | None, batch: int = DEFAULT_BATCH
) -> list[InputSpec]:
    """Kept for callers of the old name: ``specs_before_capture`` with positional shapes only."""
    from initlint.forward_inputs import specs_before_capture

    return specs_before_capture(model, shapes, (), batch)


def draw(specs: list[InputSpec], seed: int, device: torch.device, dtype: torch.dtype) -> ProbeInputs:
    """N(0, 1) floats, uniform ids or constant masks from a private generator: the global RNG
    is left alone. ``dtype`` is the model's floating dtype, for specs that name none."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    tensors = []
    for spec in specs:
        stored = spec.storage_dtype(dtype)
        if spec.fill is not None:
            t = torch.full(spec.shape, spec.fill, dtype=stored)
        elif spec.integer_high is not None:
            t = torch.randint(0, spec.integer_high, spec.shape, generator=generator).to(stored)
        elif not stored.is_floating_point:
            t = torch.zeros(spec.shape, dtype=stored)  # ids of no known vocabulary: 0 is always valid
        else:
            t = torch.randn(spec.shape, generator=generator).to(stored)
        tensors.append(t.to(device))
    return ProbeInputs(specs, tensors)

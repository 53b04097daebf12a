"""Probe inputs: parse ``--input-shape``, infer shapes from the first layer, draw the tensors.

Inference looks, for each input of the traced graph, for the first layer that consumes it
(through reshapes and other structural ops): ``Linear`` gives ``(B, in_features)``, ``ConvNd``
gives ``(B, in_channels, S, ...)``, ``Embedding`` gives ``(B, T)`` integer ids. The defaults below
are documented in the README.
"""

from __future__ import annotations

import inspect
import operator
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


@dataclass
class InputSpec:
    name: str
    shape: tuple[int, ...]
    integer_high: int | None = None
    """For integer ids: draw uniformly from [0, integer_high)."""
    inferred_from: str | None = None

    def to_dict(self) -> dict:
        data = {"name": self.name, "shape": list(self.shape)}
        data["dtype"] = "int64" if self.integer_high is not None else "float"
        if self.inferred_from:
            data["inferred_from"] = self.inferred_from
        return data


@dataclass
class ProbeInputs:
    specs: list[InputSpec]
    tensors: list[torch.Tensor] = field(default_factory=list)

    @property
    def batch_size(self) -> int | None:
        return self.tensors[0].shape[0] if self.tensors and self.tensors[0].dim() else None


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


def required_inputs(graph_module: fx.GraphModule) -> list[fx.Node]:
    """Placeholders without a default value: the inputs a probe must supply."""
    return [n for n in graph_module.graph.nodes if n.op == "placeholder" and not n.args]


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
    """A functional layer whose weight is a parameter of the model (e.g. a bare ``nn.Linear`` root)."""
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    if not isinstance(weight, fx.Node) or weight.op != "get_attr":
        return None
    kind = ops.function_kind(node.target).name
    if kind not in ("linear", "conv", "embedding"):
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
        layer = _first_layer(node, graph_module)
        high = layer.size if layer is not None and layer.family == "embedding" else None
        specs.append(InputSpec(node.name, shape, integer_high=high))
    return specs


def specs_without_graph(
    model: nn.Module, shapes: list[tuple[int, ...]] | None, batch: int = DEFAULT_BATCH
) -> list[InputSpec]:
    """Specs for a model fx could not trace: its inputs are ``forward``'s required parameters,
    and with one input and no shape given, the first Linear/Conv/Embedding *registered* stands
    in for the first one called."""
    names = [
        p.name for p in inspect.signature(model.forward).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    first = next((layer for m in model.modules() if (layer := _from_module(m)) is not None), None)
    if first is not None:
        first = replace(first, description=first.description.replace("first layer", "first registered layer"))
    if shapes:
        _checked_count(names, shapes)
        high = first.size if first is not None and first.family == "embedding" and len(names) == 1 else None
        return [InputSpec(name, tuple(shape), integer_high=high) for name, shape in zip(names, shapes)]
    if len(names) != 1:
        raise InitlintError(
            f"cannot infer the shapes of {len(names)} inputs ({', '.join(names)}) of a model that "
            "torch.fx cannot trace; pass one --input-shape per input, in order."
        )
    return [_spec_from(names[0], first, batch)]


def draw(specs: list[InputSpec], seed: int, device: torch.device, dtype: torch.dtype) -> ProbeInputs:
    """N(0, 1) floats (or uniform ids) from a private generator: the global RNG is left alone."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    tensors = []
    for spec in specs:
        if spec.integer_high is not None:
            t = torch.randint(0, spec.integer_high, spec.shape, generator=generator)
        else:
            t = torch.randn(spec.shape, generator=generator).to(dtype)
        tensors.append(t.to(device))
    return ProbeInputs(specs, tensors)

"""What each fx node computes, by family: the registry that tracer, probe and graph share.

Like timm's registries, knowledge about layers lives in tables here instead of special cases
scattered through the pipeline. A node is classified by its module class (first match along the
class's MRO, so ``ReLU6`` is not mistaken for its base ``Hardtanh``), its function, or its method.
"""

from __future__ import annotations

import operator
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx import Node

from initlint.renorm_layer import RenormLayer, StochasticLayer

ACTIVATION = "activation"
NORM = "norm"
POOL = "pool"
WEIGHTED = "weighted"
DROPOUT = "dropout"
MUL = "mul"
ADD = "add"
ATTENTION = "attention"
"""Softmax, and the attentions that compute one inside: nonlinear in their input's scale."""
STRUCTURAL = "structural"
OTHER = "other"


@dataclass(frozen=True)
class OpKind:
    """A node's family (one of the constants above) and a canonical name within it."""

    family: str
    name: str


_MODULES: dict[type, OpKind] = {
    nn.ReLU: OpKind(ACTIVATION, "relu"),
    nn.ReLU6: OpKind(ACTIVATION, "relu6"),
    nn.LeakyReLU: OpKind(ACTIVATION, "leaky_relu"),
    nn.PReLU: OpKind(ACTIVATION, "prelu"),
    nn.ELU: OpKind(ACTIVATION, "elu"),
    nn.CELU: OpKind(ACTIVATION, "celu"),
    nn.SELU: OpKind(ACTIVATION, "selu"),
    nn.GELU: OpKind(ACTIVATION, "gelu"),
    nn.SiLU: OpKind(ACTIVATION, "silu"),
    nn.Mish: OpKind(ACTIVATION, "mish"),
    nn.Softplus: OpKind(ACTIVATION, "softplus"),
    nn.Sigmoid: OpKind(ACTIVATION, "sigmoid"),
    nn.Tanh: OpKind(ACTIVATION, "tanh"),
    nn.Hardtanh: OpKind(ACTIVATION, "hardtanh"),
    nn.Hardsigmoid: OpKind(ACTIVATION, "hardsigmoid"),
    nn.Hardswish: OpKind(ACTIVATION, "hardswish"),
    nn.Softsign: OpKind(ACTIVATION, "softsign"),
    nn.modules.batchnorm._BatchNorm: OpKind(NORM, "batch_norm"),
    nn.LayerNorm: OpKind(NORM, "layer_norm"),
    nn.GroupNorm: OpKind(NORM, "group_norm"),
    nn.modules.instancenorm._InstanceNorm: OpKind(NORM, "instance_norm"),
    nn.LocalResponseNorm: OpKind(NORM, "local_response_norm"),
    nn.AvgPool1d: OpKind(POOL, "avg_pool"),
    nn.AvgPool2d: OpKind(POOL, "avg_pool"),
    nn.AvgPool3d: OpKind(POOL, "avg_pool"),
    nn.AdaptiveAvgPool1d: OpKind(POOL, "adaptive_avg_pool"),
    nn.AdaptiveAvgPool2d: OpKind(POOL, "adaptive_avg_pool"),
    nn.AdaptiveAvgPool3d: OpKind(POOL, "adaptive_avg_pool"),
    nn.MaxPool1d: OpKind(OTHER, "max_pool"),
    nn.MaxPool2d: OpKind(OTHER, "max_pool"),
    nn.MaxPool3d: OpKind(OTHER, "max_pool"),
    nn.AdaptiveMaxPool1d: OpKind(OTHER, "max_pool"),
    nn.AdaptiveMaxPool2d: OpKind(OTHER, "max_pool"),
    nn.AdaptiveMaxPool3d: OpKind(OTHER, "max_pool"),
    nn.Linear: OpKind(WEIGHTED, "linear"),
    nn.Bilinear: OpKind(WEIGHTED, "bilinear"),
    nn.modules.conv._ConvNd: OpKind(WEIGHTED, "conv"),
    nn.Embedding: OpKind(WEIGHTED, "embedding"),
    nn.EmbeddingBag: OpKind(WEIGHTED, "embedding_bag"),
    nn.modules.dropout._DropoutNd: OpKind(DROPOUT, "dropout"),
    nn.Flatten: OpKind(STRUCTURAL, "flatten"),
    nn.Unflatten: OpKind(STRUCTURAL, "unflatten"),
    nn.Identity: OpKind(STRUCTURAL, "identity"),
    nn.Softmax: OpKind(ATTENTION, "softmax"),
}
_MODULES[RenormLayer] = OpKind(OTHER, "renorm")
if hasattr(nn, "RMSNorm"):
    _MODULES[nn.RMSNorm] = OpKind(NORM, "rms_norm")

_FUNCTIONS: dict[object, OpKind] = {
    torch.relu: OpKind(ACTIVATION, "relu"),
    F.relu: OpKind(ACTIVATION, "relu"),
    F.relu6: OpKind(ACTIVATION, "relu6"),
    F.leaky_relu: OpKind(ACTIVATION, "leaky_relu"),
    F.elu: OpKind(ACTIVATION, "elu"),
    F.celu: OpKind(ACTIVATION, "celu"),
    torch.celu: OpKind(ACTIVATION, "celu"),
    F.selu: OpKind(ACTIVATION, "selu"),
    torch.selu: OpKind(ACTIVATION, "selu"),
    F.gelu: OpKind(ACTIVATION, "gelu"),
    F.silu: OpKind(ACTIVATION, "silu"),
    F.mish: OpKind(ACTIVATION, "mish"),
    F.softplus: OpKind(ACTIVATION, "softplus"),
    torch.sigmoid: OpKind(ACTIVATION, "sigmoid"),
    F.sigmoid: OpKind(ACTIVATION, "sigmoid"),
    torch.tanh: OpKind(ACTIVATION, "tanh"),
    F.tanh: OpKind(ACTIVATION, "tanh"),
    F.hardtanh: OpKind(ACTIVATION, "hardtanh"),
    F.hardsigmoid: OpKind(ACTIVATION, "hardsigmoid"),
    F.hardswish: OpKind(ACTIVATION, "hardswish"),
    F.softsign: OpKind(ACTIVATION, "softsign"),
    F.batch_norm: OpKind(NORM, "batch_norm"),
    F.layer_norm: OpKind(NORM, "layer_norm"),
    F.group_norm: OpKind(NORM, "group_norm"),
    F.instance_norm: OpKind(NORM, "instance_norm"),
    F.avg_pool1d: OpKind(POOL, "avg_pool"),
    F.avg_pool2d: OpKind(POOL, "avg_pool"),
    F.avg_pool3d: OpKind(POOL, "avg_pool"),
    F.adaptive_avg_pool1d: OpKind(POOL, "adaptive_avg_pool"),
    F.adaptive_avg_pool2d: OpKind(POOL, "adaptive_avg_pool"),
    F.adaptive_avg_pool3d: OpKind(POOL, "adaptive_avg_pool"),
    torch.mean: OpKind(POOL, "mean"),
    **{fn: OpKind(OTHER, "max_pool") for fn in (
        F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    )},
    F.linear: OpKind(WEIGHTED, "linear"),
    F.softmax: OpKind(ATTENTION, "softmax"),
    torch.softmax: OpKind(ATTENTION, "softmax"),
    F.scaled_dot_product_attention: OpKind(ATTENTION, "attention"),
    F.conv1d: OpKind(WEIGHTED, "conv"),
    F.conv2d: OpKind(WEIGHTED, "conv"),
    F.conv3d: OpKind(WEIGHTED, "conv"),
    F.embedding: OpKind(WEIGHTED, "embedding"),
    F.dropout: OpKind(DROPOUT, "dropout"),
    F.dropout1d: OpKind(DROPOUT, "dropout"),
    F.dropout2d: OpKind(DROPOUT, "dropout"),
    F.dropout3d: OpKind(DROPOUT, "dropout"),
    F.alpha_dropout: OpKind(DROPOUT, "dropout"),
    operator.mul: OpKind(MUL, "mul"),
    torch.mul: OpKind(MUL, "mul"),
    operator.add: OpKind(ADD, "add"),
    operator.iadd: OpKind(ADD, "add"),
    torch.add: OpKind(ADD, "add"),
    operator.getitem: OpKind(STRUCTURAL, "getitem"),
    getattr: OpKind(STRUCTURAL, "getattr"),
    torch.flatten: OpKind(STRUCTURAL, "flatten"),
    torch.reshape: OpKind(STRUCTURAL, "reshape"),
    torch.permute: OpKind(STRUCTURAL, "permute"),
    torch.transpose: OpKind(STRUCTURAL, "transpose"),
    torch.squeeze: OpKind(STRUCTURAL, "squeeze"),
    torch.unsqueeze: OpKind(STRUCTURAL, "unsqueeze"),
}
if hasattr(F, "rms_norm"):
    _FUNCTIONS[F.rms_norm] = OpKind(NORM, "rms_norm")

_METHODS: dict[str, OpKind] = {
    "relu": OpKind(ACTIVATION, "relu"),
    "sigmoid": OpKind(ACTIVATION, "sigmoid"),
    "tanh": OpKind(ACTIVATION, "tanh"),
    "mean": OpKind(POOL, "mean"),
    "mul": OpKind(MUL, "mul"),
    "add": OpKind(ADD, "add"),
    "softmax": OpKind(ATTENTION, "softmax"),
    **{
        name: OpKind(STRUCTURAL, name)
        for name in (
            "view", "reshape", "flatten", "permute", "transpose", "contiguous", "squeeze",
            "unsqueeze", "expand", "expand_as", "view_as", "size", "dim", "to", "float",
        )
    },
}

_ATEN: dict[str, OpKind] = {
    # the ATen operators of a graph captured by torch.export, by overload packet
    **{name: OpKind(ACTIVATION, name) for name in (
        "relu", "relu6", "leaky_relu", "elu", "celu", "selu", "gelu", "silu", "mish", "softplus",
        "sigmoid", "tanh", "hardtanh", "hardsigmoid", "hardswish",
    )},
    "prelu": OpKind(ACTIVATION, "prelu"),
    "_prelu_kernel": OpKind(ACTIVATION, "prelu"),
    **{name: OpKind(NORM, "layer_norm") for name in ("layer_norm", "native_layer_norm")},
    **{name: OpKind(NORM, "batch_norm") for name in (
        "batch_norm", "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_functional",
    )},
    **{name: OpKind(NORM, "group_norm") for name in ("group_norm", "native_group_norm")},
    "instance_norm": OpKind(NORM, "instance_norm"),
    **{name: OpKind(NORM, "rms_norm") for name in ("rms_norm", "_fused_rms_norm")},
    **{name: OpKind(POOL, "avg_pool") for name in ("avg_pool1d", "avg_pool2d", "avg_pool3d")},
    **{name: OpKind(POOL, "adaptive_avg_pool") for name in (
        "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "_adaptive_avg_pool2d",
        "_adaptive_avg_pool3d",
    )},
    "mean": OpKind(POOL, "mean"),
    "linear": OpKind(WEIGHTED, "linear"),
    **{name: OpKind(WEIGHTED, "conv") for name in ("conv1d", "conv2d", "conv3d", "convolution", "_convolution")},
    "embedding": OpKind(WEIGHTED, "embedding"),
    **{name: OpKind(DROPOUT, "dropout") for name in (
        "dropout", "native_dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout",
    )},
    "mul": OpKind(MUL, "mul"),
    "add": OpKind(ADD, "add"),
    **{name: OpKind(STRUCTURAL, name) for name in (
        "view", "reshape", "_unsafe_view", "permute", "transpose", "t", "unsqueeze", "squeeze", "expand",
        "flatten", "contiguous", "clone", "alias", "slice", "select", "_to_copy", "to", "detach",
        "lift_fresh_copy", "unflatten", "view_as", "expand_as",
    )},
    **{name: OpKind(OTHER, "max_pool") for name in (
        "max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
        "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    )},
    "_softmax": OpKind(ATTENTION, "softmax"),
    "softmax": OpKind(ATTENTION, "softmax"),
    "scaled_dot_product_attention": OpKind(ATTENTION, "attention"),
}

# Activations whose slope vanishes away from the origin (IL201) and those that act as gates (IL401).
SATURATING = frozenset({"sigmoid", "tanh", "hardtanh", "hardsigmoid", "softsign"})
GATE_LIKE = frozenset({"sigmoid", "hardsigmoid"})
UNKNOWN = OpKind(OTHER, "other")
MULTIHEAD_ATTENTION = OpKind(ATTENTION, "multihead_attention")
"""``nn.MultiheadAttention``, which ``node_kind`` classifies but ``module_kind`` does not: a kind
that ``module_kind`` knows makes capture collapse the module's call into ``module(x)``, and this
one takes a query, a key and a value."""


_DROP_PATHS = {("torchvision.ops.stochastic_depth", "stochastic_depth"): 3, ("timm.layers.drop", "drop_path"): 2}
"""Libraries' stochastic depth, dropout of a whole residual branch per sample: (module, function)
-> the position of its ``training`` argument."""
DROP_PATH = OpKind(DROPOUT, "drop_path")
_MODULES[StochasticLayer] = DROP_PATH


def drop_path_training_at(target: object) -> int | None:
    """Where ``target``'s ``training`` argument goes, when it is a library's stochastic depth."""
    return _DROP_PATHS.get((getattr(target, "__module__", None), getattr(target, "__name__", None)))


def drop_paths() -> list[object]:
    """The stochastic-depth functions of the libraries imported so far (initlint never imports
    one just to ask)."""
    libraries = ((sys.modules.get(module), name) for module, name in _DROP_PATHS)
    return [getattr(library, name) for library, name in libraries if callable(getattr(library, name, None))]


_SHAPE_TEMPLATES = frozenset({"expand_as", "view_as", "reshape_as"})
_NEW_LIKE = frozenset({"new_empty", "new_zeros", "new_ones", "new_full"})


def reads_shape_only(user: Node, node: Node) -> bool:
    """Whether ``user`` takes only ``node``'s shape, dtype or device, no value of it:
    ``y.expand_as(node)``, ``node.new_empty(size)``."""
    if user.op != "call_method" or not user.args:
        return False
    if user.target in _SHAPE_TEMPLATES:
        return len(user.args) == 2 and user.args[1] is node and user.args[0] is not node
    return user.target in _NEW_LIKE and user.args[0] is node and node not in user.args[1:]


def module_kind(module: nn.Module) -> OpKind:
    """Classify a module by the first registered class along its MRO."""
    for cls in type(module).__mro__:
        if cls in _MODULES:
            return _MODULES[cls]
    return UNKNOWN


def function_kind(target: object) -> OpKind:
    """Classify a function by identity (``torch.sigmoid``, ``F.dropout``, ``operator.add``...),
    or an ATen operator (``aten.sigmoid.default``) by its overload packet."""
    if isinstance(target, torch._ops.OpOverload):
        packet = target.overloadpacket
        return _ATEN.get(packet.__name__, UNKNOWN) if packet.__module__.endswith("aten") else UNKNOWN
    try:
        kind = _FUNCTIONS.get(target, UNKNOWN)
    except TypeError:  # unhashable target
        return UNKNOWN
    return DROP_PATH if kind is UNKNOWN and drop_path_training_at(target) is not None else kind


KIND = "initlint_kind"
"""Node meta: the kind capture recognised from what a module computes (an RMSNorm of a library's
own, a GELU written out in ATen operators), which its class cannot tell."""
_MATMULS = frozenset({"addmm", "mm", "matmul", "bmm", "baddbmm", "einsum"})


def node_kind(node: Node, root: nn.Module) -> OpKind:
    """Classify an fx node of a GraphModule whose root is ``root``."""
    if KIND in node.meta:
        return node.meta[KIND]
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        return MULTIHEAD_ATTENTION if isinstance(module, nn.MultiheadAttention) else module_kind(module)
    if node.op == "call_function":
        if _is_matmul_with_parameter(node):
            return OpKind(WEIGHTED, "linear")
        kind = function_kind(node.target)
        if kind.name == "mean" and not reduces_positions(node):
            return UNKNOWN
        return kind
    if node.op == "call_method":
        kind = _METHODS.get(node.target, UNKNOWN)
        if kind.name == "mean" and not reduces_positions(node):
            return UNKNOWN
        return kind
    return UNKNOWN


def _is_matmul_with_parameter(node: Node) -> bool:
    """A matrix product with a weight of the model (Hugging Face's ``Conv1D`` is an addmm)."""
    target = node.target
    if not isinstance(target, torch._ops.OpOverload) and target not in (torch.matmul, torch.mm, torch.addmm):
        return False
    name = target.overloadpacket.__name__ if isinstance(target, torch._ops.OpOverload) else target.__name__
    return name in _MATMULS and any(isinstance(a, Node) and a.op == "get_attr" for a in node.args)


def reduces_positions(node: Node) -> bool:
    """A mean is a pool when it averages over explicit non-batch dims (e.g. ``x.mean((2, 3))``)."""
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    if dims is None:
        return False
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    return all(isinstance(d, int) and d != 0 for d in dims)

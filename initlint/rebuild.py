"""Python that rebuilds one layer of a fixed model: its ``torch.nn`` constructor, inside the calls
that give it torch's weight normalizations again.

``weight_norm`` and ``spectral_norm`` (as parametrizations, or as the older hooks that audio
models and GANs still use) compute the layer's weight from other tensors on every call; rebuilt
without them, the layer would neither load its state dict nor compute what it did. Any other
hook or parametrization changes a layer in ways generated code cannot know, so such a layer is
refused rather than rebuilt without it.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from initlint.renorm_layer import RenormLayer
from initlint.safe_code import CodeNotWritable, is_identifier, is_literal_call
from initlint.weight_scale import torch_parametrization

_PARAMETRIZATIONS = {
    "_WeightNorm": ("torch.nn.utils.parametrizations.weight_norm", ("dim",)),
    "_SpectralNorm": ("torch.nn.utils.parametrizations.spectral_norm", ("n_power_iterations", "eps", "dim")),
}
"""Parametrization class -> the function that applies it, and the attributes that function takes
back as keyword arguments of the same names."""

_HOOKS = {
    WeightNorm: ("torch.nn.utils.weight_norm", ("dim",)),
    SpectralNorm: ("torch.nn.utils.spectral_norm", ("n_power_iterations", "eps", "dim")),
}
"""The same for the hooks ``torch.nn.utils.weight_norm`` and ``spectral_norm`` register."""


def refuse_hooks(path: str, module: nn.Module, known: tuple[type, ...] = ()) -> None:
    """CodeNotWritable where calling ``module`` runs hooks, other than forward pre-hooks of the
    ``known`` types: code written from its forward alone (its operators, captured), or from its
    constructor, would compute something else."""
    unknown = any(type(hook) not in known for hook in module._forward_pre_hooks.values())
    if unknown or module._forward_hooks or module._backward_hooks or module._backward_pre_hooks:
        raise CodeNotWritable(f"layer {path!r} has hooks that generated code cannot register again")


def constructor(path: str, module: nn.Module) -> str:
    """An expression that rebuilds ``module`` (weights aside), checked by comparing reprs, the
    constructor's settings, the normalizations' and the shapes of parameters and buffers."""
    if isinstance(module, RenormLayer):
        return "RenormLayer(1.0, 0.0)"
    refused = CodeNotWritable(f"cannot write code that rebuilds layer {path!r} ({type(module).__name__})")
    cls = type(module).__bases__[0] if parametrize.is_parametrized(module) else type(module)
    if cls is not getattr(nn, cls.__name__, None):
        raise refused
    normalizations = _normalizations(path, module)
    wanted = _settings(module, cls)
    # a layer whose repr shows no settings (nn.MultiheadAttention) is built from its settings alone
    arguments = [module.extra_repr()] if module.extra_repr() else [f"{key}={value!r}" for key, value in wanted.items()]
    expression = _expression(cls, arguments, normalizations, refused)
    rebuilt = _evaluated(expression, refused)
    # settings extra_repr leaves out (an AvgPool2d's count_include_pad=False, PoolFormer's: rebuilt
    # without it, the pooled borders were 2.6 of their std off), as keyword arguments
    given = _settings(rebuilt, cls)
    missing = [f"{key}={value!r}" for key, value in wanted.items() if given.get(key, _ABSENT) != value]
    if missing:
        expression = _expression(cls, arguments + missing, normalizations, refused)
        rebuilt = _evaluated(expression, refused)
    if repr(rebuilt) != repr(module) or _settings(rebuilt, cls) != wanted \
            or _normalizations(path, rebuilt) != normalizations or _tensor_shapes(rebuilt) != _tensor_shapes(module):
        raise refused
    return expression


def _tensor_shapes(module: nn.Module) -> dict[str, torch.Size]:
    """The shapes of a layer's parameters and buffers, by name: what its settings do not show
    (an attention built without biases has no ``in_proj_bias``)."""
    return {name: tensor.shape for name, tensor in module.state_dict().items()}


def _expression(cls: type[nn.Module], arguments: list[str], normalizations: list[tuple[str, str, dict[str, object]]],
                refused: CodeNotWritable) -> str:
    """``torch.nn.<cls>(arguments)``, literals only, inside the calls that apply torch's weight
    ``normalizations`` again."""
    expression = f"torch.nn.{cls.__name__}({', '.join(arguments)})"
    if not is_literal_call(expression, "torch.nn"):
        raise refused
    for function, name, settings in normalizations:
        keywords = "".join(f", {key}={value!r}" for key, value in settings.items())
        expression = f"{function}({expression}, name={name!r}{keywords})"
    return expression


_ABSENT = object()


def _settings(module: nn.Module, cls: type[nn.Module]) -> dict[str, object]:
    """The arguments of ``cls``'s constructor that ``module`` keeps as attributes of the same
    names, as plain values (sizes, flags, rates), whether or not ``extra_repr`` shows them."""
    def plain(value: object) -> bool:
        if isinstance(value, (tuple, list)):
            return all(map(plain, value))
        return value is None or type(value) in (bool, int, float, str)

    parameters = inspect.signature(cls).parameters
    return {key: value for key, value in vars(module).items() if key in parameters and plain(value)}


def _evaluated(expression: str, refused: CodeNotWritable) -> nn.Module:
    try:
        # literals only, so evaluating it runs nothing but the layer's constructor and torch's norms
        return eval(expression, {"torch": torch})  # noqa: S307
    except Exception as error:
        raise refused from error


def _normalizations(path: str, module: nn.Module) -> list[tuple[str, str, dict[str, object]]]:
    """(function, weight name, settings) for each of torch's weight normalizations on ``module``,
    in the order they were applied; CodeNotWritable for any other hook or parametrization."""
    refuse_hooks(path, module, known=tuple(_HOOKS))
    found = [(*_HOOKS[type(hook)], hook.name, hook) for hook in module._forward_pre_hooks.values()]
    for name, parametrizations in getattr(module, "parametrizations", {}).items():
        for parametrization in parametrizations:
            kind = torch_parametrization(parametrization)
            if kind not in _PARAMETRIZATIONS:
                raise CodeNotWritable(f"layer {path!r} has a parametrization ({type(parametrization).__name__}) "
                                      "that generated code cannot apply again")
            found.append((*_PARAMETRIZATIONS[kind], name, parametrization))
    normalizations = []
    for function, keys, name, source in found:
        settings = {key: getattr(source, key) for key in keys}
        if not is_identifier(name) or not all(type(value) in (int, float) for value in settings.values()):
            raise CodeNotWritable(f"cannot write the weight normalization of layer {path!r}")
        normalizations.append((function, name, settings))
    return normalizations

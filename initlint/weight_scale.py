"""Which parameter scales a layer's weight.

A plain layer's weight scales itself. torch's weight_norm computes W = g v / |v| on each call (as
a parametrization, or as the older hook that audio models still use), so W scales with its
magnitude g, exactly, and the planner and the fold rescale a weight-normalized layer through g.
spectral_norm divides W by its own largest singular value, so no parameter scales it: such a
layer, like one under any other parametrization, is left alone.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.nn.utils.weight_norm import WeightNorm

_WEIGHT_NORM_MAGNITUDE = "parametrizations.weight.original0"
"""g in a weight_norm parametrization (its right inverse gives (g, v))."""


def torch_parametrization(parametrization: nn.Module) -> str | None:
    """The class name of one of torch's own parametrizations (``_WeightNorm``), else None: a
    user's class of the same name is not torch's."""
    cls = type(parametrization)
    return cls.__name__ if cls.__module__ == "torch.nn.utils.parametrizations" else None


def _weight_norm_hook(module: nn.Module) -> WeightNorm | None:
    return next((hook for hook in module._forward_pre_hooks.values()
                 if isinstance(hook, WeightNorm) and hook.name == "weight"), None)


def scale_parameter(module: nn.Module) -> str | None:
    """The name, within ``module``, of the parameter that multiplies its weight: "weight" for a
    plain one, weight_norm's g; None where the weight is computed otherwise (or is missing)."""
    if parametrize.is_parametrized(module, "weight"):
        chain = module.parametrizations.weight
        weight_norm = len(chain) == 1 and torch_parametrization(chain[0]) == "_WeightNorm"
        return _WEIGHT_NORM_MAGNITUDE if weight_norm else None
    hooks = [hook for hook in module._forward_pre_hooks.values() if getattr(hook, "name", None) == "weight"]
    if hooks:
        return "weight_g" if len(hooks) == 1 and isinstance(hooks[0], WeightNorm) else None
    return "weight" if isinstance(getattr(module, "weight", None), nn.Parameter) else None


def has_plain_weight(module: nn.Module) -> bool:
    """Whether ``module``'s weight is a Parameter of its own, which initlint may redraw."""
    return scale_parameter(module) == "weight"


def current_weight(module: nn.Module) -> torch.Tensor:
    """The weight ``module`` computes with now: the older weight_norm hook recomputes its
    ``weight`` only on the next call, so after g changed the attribute is stale."""
    hook = _weight_norm_hook(module)
    return hook.compute_weight(module) if hook is not None else module.weight

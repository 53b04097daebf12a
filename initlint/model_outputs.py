"""What a model returns, as plain containers of tensors, and where the backward pass starts.

Models return tensors, tuples, lists and dicts, but also dataclasses, namedtuples and Hugging
Face ``ModelOutput``s (an ordered dict and a dataclass at once, whose unset fields are None). A
training loss is computed from the prediction, so the backward pass starts from ``logits`` or
``last_hidden_state`` when the output names one; otherwise from every floating-point output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
import torch.nn as nn

from initlint.inputs import ProbeInputs
from initlint.train_or_eval import in_mode

MAIN_OUTPUTS = ("logits", "last_hidden_state")
"""Output fields a loss is computed from, in order of preference."""


def unwrap(value: object) -> object:
    """``value`` with every mapping, dataclass and namedtuple turned into a dict (None fields
    dropped, as a ``loss=None``) and every list or tuple into a tuple, recursively."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        fields = value.items()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        fields = zip(value._fields, value)
    elif isinstance(value, (list, tuple)):
        return tuple(unwrap(v) for v in value)
    else:
        return value
    return {str(k): unwrap(v) for k, v in fields if v is not None}


def output_tensors(value: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors in a (nested) value, in order, keyed by where they sit ("logits",
    "hidden_states.1"). Anything else (a cache object, a number) holds no tensor to probe."""
    value = unwrap(value)
    if isinstance(value, torch.Tensor):
        return {prefix or "output": value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, tuple) else ()
    found: dict[str, torch.Tensor] = {}
    for key, item in items:
        found.update(output_tensors(item, f"{prefix}.{key}" if prefix else str(key)))
    return found


@torch.no_grad()
def relative_difference(a: nn.Module, b: nn.Module, inputs: ProbeInputs) -> float:
    """How far two modules' outputs differ, in units of the second's std (both in eval mode, each
    called with torch's RNG seeded alike, so noise a forward draws is drawn the same); for several
    outputs (a tuple, a dict), the largest difference; NaN when they share none."""
    outputs = []
    for module in (a, b):
        with torch.random.fork_rng(), in_mode(module, False):
            torch.manual_seed(0)
            outputs.append(output_tensors(module(*inputs.args, **inputs.kwargs)))
    out_a, out_b = outputs
    shared = [key for key in out_b if key in out_a and out_b[key].is_floating_point()]
    if not shared:
        return float("nan")
    return max(((out_a[k] - out_b[k]).abs().max() / out_b[k].std().clamp_min(1e-12)).item() for k in shared)


def tensors_in(value: object) -> list[torch.Tensor]:
    """The tensors in a (nested) value, in order."""
    return list(output_tensors(value).values())


def backward_outputs(value: object) -> list[torch.Tensor]:
    """The floating-point outputs the backward pass starts from: the named prediction
    (``MAIN_OUTPUTS``) when there is one, else every floating-point output."""
    plain = unwrap(value)
    if isinstance(plain, dict):
        for name in MAIN_OUTPUTS:
            main = plain.get(name)
            if isinstance(main, torch.Tensor) and main.is_floating_point():
                return [main]
    return [t for t in tensors_in(plain) if t.is_floating_point()]

"""Models handed over inside a runtime wrapper.

``nn.DataParallel`` and ``DistributedDataParallel`` (``.module``) and ``torch.compile``
(``._orig_mod``) add no layer of their own, and neither fx nor export sees through them (the
first take ``*inputs``; the compiled one has no ``forward`` of its own), so initlint probes
the model inside and says so. A TorchScript module has no Python forward to trace or hook:
it is refused, with what to pass instead.
"""

from __future__ import annotations

import sys

import torch
import torch.nn as nn

from initlint.errors import InitlintError


def _inner(model: nn.Module) -> tuple[nn.Module, str] | None:
    """The wrapped model and the attribute that holds it, or None for no wrapper."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module, "module"
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # loaded by whoever called torch.compile
    if eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
        return model._orig_mod, "_orig_mod"
    return None


def unwrapped(model: nn.Module) -> tuple[nn.Module, str | None]:
    """The model to probe, and a note where it was taken out of a wrapper."""
    path, inner = [], model
    while (found := _inner(inner)) is not None:
        inner, attribute = found
        path.append(attribute)
    if isinstance(inner, torch.jit.ScriptModule):
        raise InitlintError(
            "the model is a TorchScript module (torch.jit.script or torch.jit.trace): its forward runs as "
            "TorchScript, which initlint can neither trace nor hook; pass the nn.Module before scripting it."
        )
    if not path:
        return model, None
    return inner, (f"probed the model inside {type(model).__name__} (.{'.'.join(path)}), which adds no layers; "
                   "what fix writes is for that model")

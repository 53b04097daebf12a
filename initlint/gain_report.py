"""What ``initlint gain`` prints: exact renorm constants, PyTorch's gain, and the data-driven one."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from dataclasses import dataclass

import torch

from initlint.errors import InitlintError
from initlint.gain import Stack, StackCurves, pytorch_gain, recommend_gain, stack_bytes
from initlint.memory import available_bytes
from initlint.moments import Moments, activation_module, gaussian_moments
from initlint.progress import Progress, TerminalProgress

BAND = 4.0
"""The band of ``recommend_gain``, the same as rules IL101 / IL501 use."""


@dataclass
class GainReport:
    activation: str
    depth: int
    width: int
    moments: Moments
    pytorch: float | None
    pytorch_curves: StackCurves | None
    recommended: StackCurves | None


LARGE_STACK = 2**23
"""depth x width^2 from which a search takes seconds (ten times the default 50 x 128^2): show progress."""


def _require_memory(depth: int, width: int) -> None:
    """Refuse a stack that cannot fit, before allocating it (the address-space limit counts too)."""
    needed = stack_bytes(depth, width)
    limits = [available_bytes(torch.device("cpu"))]
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        limits.append(None if soft == resource.RLIM_INFINITY else soft)
    free = min((limit for limit in limits if limit is not None), default=None)
    if free is not None and needed > free:
        raise InitlintError(
            f"a stack of depth {depth} and width {width} needs about {needed / 2**30:.1f} GiB and only "
            f"{free / 2**30:.1f} GiB is free; use a smaller --depth or --width."
        )


def measure_gains(activation: str, depth: int, width: int, show_progress: bool = False) -> GainReport:
    """Everything ``initlint gain`` prints. With ``show_progress``, a large stack shows a bar on
    a terminal's stderr."""
    module = activation_module(activation)
    pytorch = pytorch_gain(activation)
    _require_memory(depth, width)
    large = depth * width * width >= LARGE_STACK
    progress = TerminalProgress() if show_progress and large and sys.stderr.isatty() else Progress()
    try:
        stack = Stack(module, depth, width, progress=progress)
        return GainReport(
            activation=activation,
            depth=depth,
            width=width,
            moments=gaussian_moments(module),
            pytorch=pytorch,
            pytorch_curves=stack.curves([pytorch])[0] if pytorch else None,
            recommended=recommend_gain(module, depth, width, band=BAND, stack=stack),
        )
    except (MemoryError, torch.OutOfMemoryError) as error:
        raise InitlintError(f"out of memory for a stack of depth {depth} and width {width}; "
                            "use a smaller --depth or --width.") from error
    except RuntimeError as error:
        if "allocate" not in str(error):
            raise
        raise InitlintError(f"out of memory for a stack of depth {depth} and width {width} ({error}); "
                            "use a smaller --depth or --width.") from error


def _fixed(value: float) -> str:
    return f"{round(value, 6) + 0.0:.6f}"  # + 0.0 turns -0.0 into 0.0


def _summary(curves: StackCurves) -> str:
    worst = max(curves.grad_std, key=lambda g: abs(math.log(g)) if g > 0 else math.inf)
    return (
        f"forward std at layer {len(curves.forward_std)} {curves.forward_std[-1]:.3g}, "
        f"gradient at layer 1 {curves.grad_std[0]:.3g}x the output's (worst {worst:.3g}x)"
    )


def gain_text(report: GainReport) -> str:
    m = report.moments
    lines = [
        f"{report.activation}: for x ~ N(0, 1), mean {_fixed(m.mean)}, std {_fixed(m.std)}",
        f"  renorm constants: scale {_fixed(m.scale)}, bias {_fixed(m.bias)} "
        f"(scale * {report.activation}(x) + bias has mean 0, std 1)",
    ]
    stack = f"{report.depth} x (Linear({report.width}) -> {report.activation})"
    if report.pytorch_curves:
        lines.append(f"  torch.nn.init.calculate_gain('{report.activation}') = {report.pytorch:.6f}; "
                     f"on {stack}: {_summary(report.pytorch_curves)}")
    else:
        lines.append(f"  torch.nn.init.calculate_gain does not define '{report.activation}'")
    best = report.recommended
    if best and best.gradient_drift <= math.log(BAND):
        lines.append(f"  data-driven gain for {stack}: {best.gain:.2f}; {_summary(best)}")
    elif best:
        lines.append(f"  no gain keeps both signals of {stack} within {BAND:g}x; the closest, "
                     f"{best.gain:.2f}: {_summary(best)}; renorm the activation with the constants above instead")
    else:
        lines.append(f"  no gain keeps the forward std of {stack} within {BAND:g}x of the input's; "
                     "renorm the activation with the constants above instead")
    return "\n".join(lines) + "\n"


def gain_json(report: GainReport) -> str:
    return json.dumps({
        "activation": report.activation,
        "depth": report.depth,
        "width": report.width,
        "mean": report.moments.mean,
        "std": report.moments.std,
        "scale": report.moments.scale,
        "bias": report.moments.bias,
        "calculate_gain": report.pytorch,
        "calculate_gain_curves": report.pytorch_curves.to_dict() if report.pytorch_curves else None,
        "recommended": report.recommended.to_dict() if report.recommended else None,
    }, indent=2) + "\n"

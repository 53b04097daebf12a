"""Refuse a probe that would not fit in memory, before it runs.

The probe holds every value of the forward pass until the backward pass (autograd saves most
of them for the gradients, and initlint measures all of them), then computes a gradient per
value: about ``PROBE_FACTOR`` times the bytes of all forward values, on top of the model's
parameters, which are already in memory. The sizes come from running the graph on fake
tensors, which compute shapes and nothing else, so the estimate costs milliseconds.
"""

from __future__ import annotations

import os

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import FakeTensorMode

from initlint.errors import InitlintError
from initlint.inputs import InputSpec
from initlint.probe import FirstStepInterpreter

PROBE_FACTOR = 2.0
"""Probe bytes per byte of forward values: the values, then about as much in gradients."""
_GIB = 2**30


class _Sizes(FirstStepInterpreter):
    def __init__(self, graph_module: fx.GraphModule) -> None:
        super().__init__(graph_module)
        self.total = 0

    def observe(self, n: fx.Node, args: tuple, kwargs: dict, result: object) -> object:
        if isinstance(result, torch.Tensor) and n.op != "output":
            self.total += result.numel() * result.element_size()
        return result


def forward_bytes(
    graph_module: fx.GraphModule, specs: list[InputSpec], dtype: torch.dtype, device: torch.device
) -> int | None:
    """Bytes of all values the forward pass computes for inputs of ``specs``, without
    allocating them; None when fake tensors cannot run the graph."""
    sizes = _Sizes(graph_module)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            fakes = [
                torch.empty(s.shape, dtype=torch.int64 if s.integer_high is not None else dtype, device=device)
                for s in specs
            ]
            sizes.run(*fakes)
    except Exception:  # an op without a shape rule (data-dependent output sizes): no estimate
        return None
    return sizes.total


def available_bytes(device: torch.device) -> int | None:
    """Free memory where the probe runs: the GPU's free memory, else the system's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_probe_fits(
    graph_module: fx.GraphModule, specs: list[InputSpec], dtype: torch.dtype, device: torch.device
) -> None:
    """Raise bad input when the probe's estimated memory exceeds what is free on ``device``;
    called before the probe inputs are drawn, since they may be what does not fit."""
    values, free = forward_bytes(graph_module, specs, dtype, device), available_bytes(device)
    if values is None or free is None or values * PROBE_FACTOR <= free:
        return
    shapes = ", ".join(str(tuple(s.shape)) for s in specs)
    raise InitlintError(
        f"the probe would need about {values * PROBE_FACTOR / _GIB:.1f} GiB on {device} "
        f"({values / _GIB:.1f} GiB of forward values for inputs of shape {shapes}, and their "
        f"gradients) but only {free / _GIB:.1f} GiB is free; probe a smaller batch or input "
        "with --input-shape (e.g. batch 2 or a smaller image), or free memory."
    )

"""Refuse a probe that would not fit in memory, before it exhausts it.

The probe holds every value of the forward pass until the backward pass (autograd saves most
of them for the gradients, and initlint measures all of them), then computes a gradient per
value: about ``PROBE_FACTOR`` times the bytes of all forward values, on top of the model's
parameters, which are already in memory. So a budget of the free memory is set when the probe
starts: the inputs are charged before they are drawn (they may be what does not fit), and
each value as the forward pass makes it, which stops the probe at the first value past the
budget instead of at the operating system's out-of-memory killer.
"""

from __future__ import annotations

import math
import os

import torch

from initlint.errors import InitlintError
from initlint.inputs import InputSpec

PROBE_FACTOR = 2.0
"""Probe bytes per byte of forward values: the values, then about as much in gradients."""
_GIB = 2**30


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


class MemoryBudget:
    """What the probe may hold on ``device``: the free memory when it starts."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.free = available_bytes(device)
        self.held = 0
        self.shapes = "?"

    def check_inputs(self, specs: list[InputSpec], dtype: torch.dtype) -> None:
        """Check that the probe inputs fit before they are drawn (the forward pass charges them
        when it measures them)."""
        self.shapes = ", ".join(str(tuple(s.shape)) for s in specs)
        sizes = [s.storage_dtype(dtype).itemsize * math.prod(s.shape) for s in specs]
        self._check(self.held + sum(sizes))

    def charge(self, value: torch.Tensor) -> None:
        """Charge one value of the forward pass, just made."""
        self.held += value.numel() * value.element_size()
        self._check(self.held)

    def _check(self, held: int) -> None:
        if self.free is not None and held * PROBE_FACTOR > self.free:
            raise InitlintError(
                f"the probe would need more than {held * PROBE_FACTOR / _GIB:.1f} GiB on "
                f"{self.device} (forward values for inputs of shape {self.shapes}, and their "
                f"gradients) but only {self.free / _GIB:.1f} GiB was free; it stopped before "
                "exhausting it. Probe a smaller batch or input with --input-shape (e.g. batch 2 "
                "or a smaller image), or free memory."
            )

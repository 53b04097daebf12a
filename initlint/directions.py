"""Orthogonal weight directions for the layers ``fix`` rescales: the other half of LSUV.

LSUV (Mishkin and Matas 2016) starts from orthonormal weights and then rescales each layer to
unit output variance; Deep Kernel Shaping assumes orthogonal weights too. A data-free LSUV that
only rescales keeps the i.i.d. directions of PyTorch's default init, whose products grow
ill-conditioned with depth: on 30-layer digits MLPs under Adam, tanh and SELU stacks fixed
with their own directions trained to 0.869 and 0.881, and with orthogonal ones to 0.937 and
0.908 (LSUV: 0.941, 0.934; benchmarks/train_digits.py). So a layer the plan rescales gets a random
orthogonal matrix (conv kernels flattened per output channel, as ``nn.init.orthogonal_``) at
its own Frobenius norm, drawn from the seed and the layer's path alone: the planner, the
renorm-node model and the folded model draw the same one.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

import torch
import torch.nn as nn

ORTHOGONAL_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)
"""Layers whose weight is a map between feature spaces; an embedding's rows are vectors of
their own and keep them."""


def takes_orthogonal_directions(module: nn.Module) -> bool:
    """A Linear or Conv with a float weight that is not all zeros (a branch zero-initialized
    on purpose, as in Fixup or SkipInit, is the model's intent)."""
    weight = getattr(module, "weight", None)
    return isinstance(module, ORTHOGONAL_LAYERS) and isinstance(weight, torch.Tensor) and \
        weight.is_floating_point() and weight.dim() >= 2 and bool(weight.detach().abs().sum() > 0)


_drawn: dict[tuple, torch.Tensor] | None = None
"""Within ``drawn_once``: each layer's unit-norm draw, by (path, seed, shape)."""


@contextlib.contextmanager
def drawn_once() -> Iterator[None]:
    """Within one fix, draw each layer's directions once: the planner, every trial build of
    the never-worse check and the fold ask for the same ones, and a QR of a 4096x4096 weight
    takes seconds."""
    global _drawn
    previous, _drawn = _drawn, {}
    try:
        yield
    finally:
        _drawn = previous


def orthogonal_like(weight: torch.Tensor, path: str, seed: int) -> torch.Tensor:
    """A random orthogonal tensor shaped as ``weight``, at its Frobenius norm, drawn from
    ``seed`` and ``path`` only."""
    key = (path, seed, tuple(weight.shape))
    unit = _drawn.get(key) if _drawn is not None else None
    if unit is None:
        generator = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(path.encode())) % 2**63)
        drawn = torch.empty(weight.shape, dtype=torch.float64)
        nn.init.orthogonal_(drawn, generator=generator)
        unit = drawn / drawn.norm()
        if _drawn is not None:
            _drawn[key] = unit
    norm = weight.detach().to(torch.float64).norm().cpu()
    return (unit * norm).to(weight.device, weight.dtype)

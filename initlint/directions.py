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
from dataclasses import dataclass

import torch
import torch.nn as nn

from initlint.weight_scale import has_plain_weight

ORTHOGONAL_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)
"""Layers whose weight is a map between feature spaces; an embedding's rows are vectors of
their own and keep them."""


def takes_orthogonal_directions(module: nn.Module) -> bool:
    """A Linear or Conv with a float weight of its own (not one that weight_norm computes) that is
    not all zeros (a branch zero-initialized on purpose, as in Fixup or SkipInit, is the model's
    intent)."""
    if not isinstance(module, ORTHOGONAL_LAYERS) or not has_plain_weight(module):
        return False
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.is_floating_point() and weight.dim() >= 2 and \
        bool(weight.detach().abs().sum() > 0)


@dataclass(frozen=True)
class Pairing:
    """Looks-linear structure in a layer's directions (``initlint.looks_linear``)."""

    mirrored: bool = False
    """Its output units come in pairs (u, -u): rows (B; -B), bias (b; -b)."""
    paired: bool = False
    """Its input units come in pairs (f(u), f(-u)): columns (B, -B)."""
    duplicated: bool = False
    """Its output units come in equal pairs (v, v): rows (B; B), bias (b; b). A gate's layer:
    the gate then scales both units of each mirrored pair it multiplies alike."""

    @property
    def row_halves(self) -> bool:
        return self.mirrored or self.duplicated

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


def orthogonal_like(weight: torch.Tensor, path: str, seed: int, pairing: Pairing | None = None) -> torch.Tensor:
    """A random orthogonal tensor shaped as ``weight``, at its Frobenius norm, drawn from
    ``seed`` and ``path`` only; with ``pairing``, an orthogonal half repeated, with its sign
    flipped along the mirrored rows and the paired columns, as it is along duplicated rows."""
    pairing = pairing or Pairing()
    half = (weight.shape[0] // (1 + pairing.row_halves), weight.shape[1] // (1 + pairing.paired), *weight.shape[2:])
    key = (path, seed, half)
    unit = _drawn.get(key) if _drawn is not None else None
    if unit is None:
        generator = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(path.encode())) % 2**63)
        unit = torch.empty(half, dtype=torch.float64)
        nn.init.orthogonal_(unit, generator=generator)
        if _drawn is not None:
            _drawn[key] = unit
    if pairing.paired:
        unit = torch.cat([unit, -unit], 1)
    if pairing.row_halves:
        unit = torch.cat([unit, -unit if pairing.mirrored else unit], 0)
    norm = weight.detach().to(torch.float64).norm().cpu()
    return (unit / unit.norm() * norm).to(weight.device, weight.dtype)


def halved_bias(bias: torch.Tensor, mirrored: bool) -> torch.Tensor:
    """(b; -b), or (b; b), from the first half of ``bias``: the bias of a layer whose rows are
    mirrored, or duplicated."""
    half = bias.detach()[: bias.shape[0] // 2]
    return torch.cat([half, -half if mirrored else half])


def redrawn(layer: nn.Module, path: str, seed: int, pairing: Pairing | None = None) -> dict[str, torch.Tensor]:
    """The parameters ``layer`` takes with orthogonal directions: its weight, and its bias where
    the rows are mirrored or duplicated."""
    parameters = {"weight": orthogonal_like(layer.weight, path, seed, pairing)}
    if pairing is not None and pairing.row_halves and getattr(layer, "bias", None) is not None:
        parameters["bias"] = halved_bias(layer.bias, pairing.mirrored)
    return parameters


def reads_pairs(layer: nn.Module) -> bool:
    """Whether ``layer``'s columns pair its inputs as (B, -B), a nonzero B: a looks-linear init
    (never a computed weight: reading spectral_norm's would take a power step)."""
    if not isinstance(layer, ORTHOGONAL_LAYERS) or not has_plain_weight(layer):
        return False
    weight = getattr(layer, "weight", None)
    if not (isinstance(weight, torch.Tensor) and weight.dim() >= 2
            and weight.shape[1] % 2 == 0 and weight.device.type != "meta"):
        return False
    first, second = weight.detach().chunk(2, dim=1)
    if not torch.equal(first[0], -second[0]):  # every check reads every layer: the first row settles most
        return False
    return bool(torch.equal(first, -second)) and bool(first.any())

"""Probe a model built on the ``meta`` device one layer's weights at a time.

A model too large for memory can be built with ``torch.device("meta")``: its parameters have
shapes but no storage. The probe then runs each layer on a copy that gets real storage and
its own initializer (``reset_parameters``, as the layer's constructor would run it), under a
seed fixed by the layer's path. The copy is dropped when the layer returns. The backward pass
needs some weights again (a Linear's gradient to its input is ``W^T g``): autograd saves a
recipe instead of the weight (``saved_tensors_hooks``), and the weight is rebuilt, bit for bit
from the same seed, when the backward reaches the layer. So at most one layer's weights are in
memory at a time, beside the activations that any backward pass keeps.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn

from initlint.errors import InitlintError

INITIALIZERS = ("reset_parameters", "_reset_parameters")
"""Methods torch.nn layers initialize themselves with (MultiheadAttention has the second)."""


def on_meta(module: nn.Module) -> bool:
    return any(t.is_meta for _, t in _named_tensors(module))


def _named_tensors(module: nn.Module, recurse: bool = True) -> list[tuple[str, torch.Tensor]]:
    """Parameters and buffers: a layer's initializer sets both (BatchNorm's running statistics)."""
    return [*module.named_parameters(recurse=recurse), *module.named_buffers(recurse=recurse)]


def _initializer(module: nn.Module) -> Callable[[], None] | None:
    return next((getattr(module, m) for m in INITIALIZERS if hasattr(module, m)), None)


def _own_tensors(module: nn.Module) -> list[str]:
    return [name for name, t in _named_tensors(module, recurse=False) if t is not None]


@dataclass(frozen=True)
class _Recipe:
    """What the backward pass needs to rebuild a saved weight (or a view of one)."""

    layer: str
    tensor: str
    size: torch.Size
    stride: tuple[int, ...]
    offset: int


class PieceByPiece:
    """Real copies of a meta model's layers, one at a time; counts the bytes of weights alive."""

    def __init__(self, root: nn.Module, device: torch.device, seed: int) -> None:
        self.root = root
        self.device = device
        self.seed = seed
        self.live_bytes = 0
        self.peak_bytes = 0
        self._origin: dict[int, tuple[str, str]] = {}
        """Storage address of each live rebuilt tensor -> (layer path, tensor name)."""
        self._rebuilt: tuple[str, nn.Module] | None = None
        """The layer the backward pass rebuilt last: its weights serve every node of that layer."""

    def layer(self, path: str) -> nn.Module:
        """The layer at ``path``, with real weights from its own initializer if it has none."""
        module = self.root.get_submodule(path)
        if not on_meta(module):
            return module
        uninitialized = [
            ".".join(filter(None, (path, sub_path, name)))
            for sub_path, sub in module.named_modules() if _initializer(sub) is None
            for name in _own_tensors(sub)
        ]
        if uninitialized:
            raise InitlintError(
                f"{', '.join(uninitialized)} {'is' if len(uninitialized) == 1 else 'are'} on the meta device "
                "in a module without reset_parameters, so initlint cannot know the initial values. "
                "Give the module a reset_parameters method, or build it on a real device."
            )
        real = copy.deepcopy(module).to_empty(device=self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(zlib.crc32(f"{self.seed}:{path}".encode()))
            for sub in reversed(list(real.modules())):  # children first, as their constructors ran
                initializer = _initializer(sub)
                if initializer is not None:
                    initializer()
        real.requires_grad_(False)  # no AccumulateGrad node may hold the weights past the layer
        for name, tensor in _named_tensors(real):
            self._track(path, name, tensor)
        return real

    def note(self) -> str:
        return (f"parameters on the meta device: each layer was built with its own initializer while it "
                f"ran, at most {self.peak_bytes / 2**20:.1f} MiB of weights at once")

    def attribute(self, target: str, value: object) -> object:
        """A tensor that the traced code reads directly (``get_attr``): fine unless on meta."""
        if isinstance(value, torch.Tensor) and value.is_meta:
            raise InitlintError(
                f"{target} is on the meta device outside any layer, so initlint cannot know its initial "
                "values. Build such tensors (a position table, a class token) on a real device: they are "
                "small beside the layers."
            )
        return value

    @contextlib.contextmanager
    def weights_rebuilt_in_backward(self) -> Iterator[None]:
        """While active, autograd saves a recipe for any rebuilt weight instead of the weight;
        the recipes are followed when the backward pass runs, active or not."""
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            yield

    def drop_rebuilt(self) -> None:
        """Let the last layer the backward pass rebuilt go: once it is over, nothing needs it,
        and kept it would sit beside the next pass's layers."""
        self._rebuilt = None

    def _track(self, path: str, name: str, tensor: torch.Tensor) -> None:
        address, size = tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes()
        self._origin[address] = (path, name)
        self.live_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        weakref.finalize(tensor, self._release, address, size)

    def _release(self, address: int, size: int) -> None:
        self._origin.pop(address, None)
        self.live_bytes -= size

    def _pack(self, tensor: torch.Tensor) -> object:
        origin = self._origin.get(tensor.untyped_storage().data_ptr()) if tensor.device == self.device else None
        if origin is None:
            return tensor
        return _Recipe(*origin, tensor.size(), tensor.stride(), tensor.storage_offset())

    def _unpack(self, saved: object) -> torch.Tensor:
        if not isinstance(saved, _Recipe):
            return saved
        if self._rebuilt is None or self._rebuilt[0] != saved.layer:
            self._rebuilt = None  # drop the previous layer before building the next
            self._rebuilt = (saved.layer, self.layer(saved.layer))
        layer = self._rebuilt[1]
        base = dict(_named_tensors(layer))[saved.tensor]
        return base.as_strided(saved.size, saved.stride, saved.offset)

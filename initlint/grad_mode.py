"""``with torch.no_grad():`` inside a forward, as graph nodes.

torch.fx's tracer runs a grad-mode block's ``__enter__`` and ``__exit__`` as plain Python and
records nothing, so a traced model (and a fixed model generated from it) would let gradients
through a block the user detached. While tracing, ``record_grad_mode`` makes entering
``torch.no_grad()`` or ``torch.enable_grad()`` two nodes, ``previous = torch.is_grad_enabled()``
then ``torch._C._set_grad_enabled(mode)``, and leaving it a node that restores ``previous``:
the probe, the kernel probe (which runs under ``no_grad`` itself) and the generated code run
the block as the original does, whatever the caller's mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.fx as fx

_BLOCKS = {torch.no_grad: False, torch.enable_grad: True}
"""The grad-mode context managers recorded, and the mode each sets."""


@contextlib.contextmanager
def record_grad_mode(tracer: fx.Tracer) -> Iterator[None]:
    """While tracing with ``tracer``, record the grad-mode blocks the traced code enters."""
    previous_modes: list[fx.Node] = []
    originals = {block: (block.__enter__, block.__exit__) for block in _BLOCKS}

    def recording(block: type, mode: bool) -> tuple:
        enter, leave = originals[block]

        def __enter__(self: object) -> None:
            previous_modes.append(tracer.create_node("call_function", torch.is_grad_enabled, (), {}))
            tracer.create_node("call_function", torch._C._set_grad_enabled, (mode,), {})
            return enter(self)

        def __exit__(self: object, *exception: object) -> None:
            tracer.create_node("call_function", torch._C._set_grad_enabled, (previous_modes.pop(),), {})
            return leave(self, *exception)

        return __enter__, __exit__

    try:
        for block, mode in _BLOCKS.items():
            block.__enter__, block.__exit__ = recording(block, mode)
        yield
    finally:
        for block, (enter, leave) in originals.items():
            block.__enter__, block.__exit__ = enter, leave

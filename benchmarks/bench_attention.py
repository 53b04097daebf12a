"""What IL203's softmax statistics add to `initlint.check` on attention models.

For each model and round: the wall time of `initlint.check` and, within it, the time spent in the
probe's softmax measurement (its entry points timed: `Probe._softmax` for softmax and
scaled_dot_product_attention nodes, `attention.of_multihead` for each nn.MultiheadAttention call). Both come from the
same run, so the share does not depend on how busy the machine is between runs. ViT-B/16 holds
12 `nn.MultiheadAttention` layers (kept whole by fx, measured through their query and key); the
encoder calls `F.scaled_dot_product_attention` (logits recomputed for a subsample of queries) or
writes the softmax out (measured from its input). Reports the round with the smallest share.
Prints one JSON object.

    python benchmarks/bench_attention.py             # ViT-B/16 and the two encoders
    python benchmarks/bench_attention.py --quick     # the encoders only, one round
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from machine import describe

import initlint
from initlint import attention, probe


class _Encoder(nn.Module):
    """Four pre-LayerNorm self-attention blocks (d_model 256, 8 heads), sdpa or written out."""

    def __init__(self, written_out: bool) -> None:
        super().__init__()
        self.written_out = written_out
        self.norms = nn.ModuleList(nn.LayerNorm(256) for _ in range(4))
        self.qkvs = nn.ModuleList(nn.Linear(256, 768) for _ in range(4))
        self.outs = nn.ModuleList(nn.Linear(256, 256) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        for norm, qkv, out in zip(self.norms, self.qkvs, self.outs):
            q, k, v = qkv(norm(x)).view(batch, tokens, 3, 8, -1).permute(2, 0, 3, 1, 4)
            if self.written_out:
                y = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(dim=-1) @ v
            else:
                y = F.scaled_dot_product_attention(q, k, v)
            x = x + out(y.transpose(1, 2).reshape(batch, tokens, width))
        return x


def _vit() -> nn.Module:
    from torchvision.models import vit_b_16
    return vit_b_16()


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "vit_b_16": (_vit, (8, 3, 224, 224)),
    "encoder_sdpa": (lambda: _Encoder(written_out=False), (8, 256, 256)),
    "encoder_written_out": (lambda: _Encoder(written_out=True), (8, 256, 256)),
}


def _timed(function: Callable, spent: list[float]) -> Callable:
    def timed(*args: object) -> object:
        start = time.perf_counter()
        try:
            return function(*args)
        finally:
            spent.append(time.perf_counter() - start)
    return timed


@contextlib.contextmanager
def _timed_softmax_statistics(spent: list[float]) -> Iterator[None]:
    entry_points = [(probe.Probe, "_softmax"), (attention, "of_multihead")]
    originals = [getattr(owner, name) for owner, name in entry_points]
    for (owner, name), original in zip(entry_points, originals):
        setattr(owner, name, _timed(original, spent))
    try:
        yield
    finally:
        for (owner, name), original in zip(entry_points, originals):
            setattr(owner, name, original)


def _one_round(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(check's seconds, of which softmax statistics)."""
    spent: list[float] = []
    with _timed_softmax_statistics(spent):
        start = time.perf_counter()
        report = initlint.check(model, x)
        total = time.perf_counter() - start
    assert any(v.softmax for v in report.graph.nodes.values()), "no softmax was measured"
    return total, sum(spent)


def measure(name: str, rounds: int) -> dict:
    build, shape = MODELS[name]
    torch.manual_seed(0)
    model, x = build(), torch.randn(shape)
    initlint.check(model, x)  # warm-up: imports, allocator
    total, softmax = min((_one_round(model, x) for _ in range(rounds)), key=lambda r: r[1] / r[0])
    return {"model": name, "input_shape": list(shape), "rounds": rounds, "check_s": round(total, 3),
            "softmax_statistics_s": round(softmax, 4), "share": round(softmax / total, 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    names = ["encoder_sdpa", "encoder_written_out"] if options.quick else list(MODELS)
    rounds = 1 if options.quick else options.rounds
    print(json.dumps({"machine": describe(), "models": [measure(name, rounds) for name in names]}, indent=2))


if __name__ == "__main__":
    main()

"""How large a model initlint can check: a wide GPT-style transformer built on the meta device.

Its parameters have shapes but no storage; `initlint.check` probes it one layer at a time
(initlint/materialize.py). The check runs in a child process, which reports its own peak
resident memory (VmHWM), so the peak is the check's alone. Prints one JSON object with the
parameter count, their size in float32, the wall time, the peak memory, the most weight
memory alive at once and the findings.

    python benchmarks/bench_scale.py                          # d_model 8192, 8 blocks: 6.9e9 parameters
    python benchmarks/bench_scale.py --width 512 --blocks 2   # seconds
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from machine import describe, own_peak_mib

VOCABULARY = 32_000


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, width // self.heads).transpose(1, 3).unbind(2)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(attended.transpose(1, 2).reshape(batch, tokens, width))


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class WideTransformer(nn.Module):
    def __init__(self, width: int, blocks: int, heads: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCABULARY, width)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(blocks)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCABULARY, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(ids))))


def child(width: int, blocks: int, heads: int, shape: tuple[int, int]) -> dict:
    import initlint

    with torch.device("meta"):
        model = WideTransformer(width, blocks, heads)
    parameters = sum(p.numel() for p in model.parameters())
    started = time.perf_counter()
    report = initlint.check(model, input_shapes=[shape])
    seconds = time.perf_counter() - started
    weights_at_once = float(re.search(r"at most ([\d.]+) MiB", report.probe_note).group(1))
    return {
        "model": f"WideTransformer(width={width}, blocks={blocks}, heads={heads})",
        "parameters": parameters, "parameters_gib_float32": round(parameters * 4 / 2**30, 1),
        "input_shape": list(shape), "check_s": round(seconds, 1),
        "peak_rss_mib": round(own_peak_mib()), "weights_at_once_mib": weights_at_once,
        "nodes": len(report.graph.nodes), "findings": sorted({f.code for f in report.findings}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--heads", type=int, default=64)
    parser.add_argument("--input-shape", default="4,8", help="batch,tokens")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.input_shape.split(","))
    if args.child:
        print(json.dumps(child(args.width, args.blocks, args.heads, shape)))
        return
    command = [sys.executable, __file__, "--child", "--width", str(args.width), "--blocks", str(args.blocks),
               "--heads", str(args.heads), "--input-shape", args.input_shape]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["machine"] = describe()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

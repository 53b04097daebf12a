"""What a fixed model costs at run time: forward latency of the original, the renorm-node model
and the folded model, as ratios.

For each architecture, ``initlint fix`` is run once (with ``--fold``, which gives both fixed
models), then the three models are timed in eval mode under ``torch.inference_mode``,
alternating over several rounds, medians of each. The fx-traced original (a GraphModule with
no renorm node) is timed too, so the renorm nodes' own cost is told apart from the cost of
running generated fx code instead of the user's ``forward``. Prints one JSON object.

    python benchmarks/bench_fix.py            # deep sigmoid MLP, ResNet-50, EfficientNet-B0
    python benchmarks/bench_fix.py --quick    # the MLP only, fewer rounds
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import statistics
import time

import torch
import torch.nn as nn
from machine import describe
from zoo_sweep import Architecture

ARCHITECTURES = {
    "sigmoid_mlp_20x512": ("mlp", "", (256, 512)),
    "resnet50": ("torchvision", "resnet50", (8, 3, 224, 224)),
    "efficientnet_b0": ("torchvision", "efficientnet_b0", (8, 3, 224, 224)),
}


def build(name: str) -> nn.Module:
    library, model, _ = ARCHITECTURES[name]
    if library == "mlp":
        torch.manual_seed(0)
        return nn.Sequential(*[m for _ in range(20) for m in (nn.Linear(512, 512), nn.Sigmoid())])
    return Architecture(library, model).build()


def fixed_models(model: nn.Module, shape: tuple[int, ...]) -> dict[str, nn.Module]:
    """The original, its plain fx trace, the renorm-node model and the folded model, in eval mode."""
    from initlint.api import CheckOptions, ModelSource
    from initlint.fixer import run_fix

    with contextlib.redirect_stderr(io.StringIO()):
        result = run_fix(model, (), CheckOptions(input_shapes=[shape]), ModelSource(), fold=True)
    models = {
        "original": model,
        "traced": torch.fx.symbolic_trace(copy.deepcopy(model)),
        "renorm_nodes": result.patched,
        "folded": result.folded.model,
    }
    return {"models": {k: m.eval() for k, m in models.items()},
            "renorm_nodes": len([r for r in result.plan if r.site != "weighted"]),
            "unfolded": len(result.folded.unfolded) + len(result.left_out)}


@torch.inference_mode()
def latency(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Seconds per forward, the mean of ``repeats`` back-to-back calls."""
    started = time.perf_counter()
    for _ in range(repeats):
        model(x)
    return (time.perf_counter() - started) / repeats


def measure(name: str, rounds: int, repeats: int) -> dict:
    shape = ARCHITECTURES[name][2]
    fixed = fixed_models(build(name), shape)
    models = fixed["models"]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for model in models.values():  # warm-up: allocator, kernels
        latency(model, x, 2)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for what, model in models.items():
            times[what].append(latency(model, x, repeats))
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": name, "input_shape": list(shape), "rounds": rounds, "repeats": repeats,
        "renorm_nodes": fixed["renorm_nodes"], "unfolded_constants": fixed["unfolded"],
        "forward_ms": {k: round(v * 1000, 3) for k, v in medians.items()},
        "ratio_to_original": {k: round(v / medians["original"], 3) for k, v in medians.items() if k != "original"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    names = ["sigmoid_mlp_20x512"] if args.quick else list(ARCHITECTURES)
    rounds, repeats = (3, 3) if args.quick else (args.rounds, args.repeats)
    result = {
        "machine": describe(),
        "models": [measure(name, rounds, repeats) for name in names],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

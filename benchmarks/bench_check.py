"""What `initlint.check` costs next to the physical limit: one traced forward and backward.

For each architecture, in one process and alternating over several rounds: the wall time of
`initlint.check` and of a bare `torch.fx.symbolic_trace` + forward + backward of the same batch,
the backward of a training step (gradients of the input and of every parameter). The probe
needs no parameter gradient, so a second reference takes the input's gradient only: the least
any probe that reads gradients can cost. Peak memory is measured in child processes (one per
measurement, its own VmHWM), since a process's peak never goes down. Also the CLI's wall time
on a tiny model against `python -c "import torch"`. Prints one JSON object.

    python benchmarks/bench_check.py                 # ResNet-50, ViT-B/16, EfficientNet-B0, MLP
    python benchmarks/bench_check.py --quick         # the MLP only, one round
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from machine import describe, own_peak_mib, wall
from zoo_sweep import Architecture

HERE = Path(__file__).resolve().parent
ARCHITECTURES = {
    "resnet50": ("torchvision", "resnet50", (8, 3, 224, 224)),
    "vit_b_16": ("torchvision", "vit_b_16", (8, 3, 224, 224)),
    "efficientnet_b0": ("torchvision", "efficientnet_b0", (8, 3, 224, 224)),
    "mlp_64x512": ("mlp", "", (8, 512)),
}


def build(name: str) -> torch.nn.Module:
    library, model, _ = ARCHITECTURES[name]
    if library == "mlp":
        torch.manual_seed(0)
        layers = [m for _ in range(64) for m in (torch.nn.Linear(512, 512), torch.nn.ReLU())]
        return torch.nn.Sequential(*layers)
    return Architecture(library, model).build()


def bare(model: torch.nn.Module, shape: tuple[int, ...], parameters: bool = True) -> None:
    """One training step's worth: trace, one forward, one backward to the input and the parameters."""
    graph_module = torch.fx.symbolic_trace(model)
    x = torch.randn(shape, requires_grad=True)
    out = graph_module(x)
    wrt = [x, *graph_module.parameters()] if parameters else [x]
    torch.autograd.grad(out, wrt, torch.randn_like(out))


def bare_input_only(model: torch.nn.Module, shape: tuple[int, ...]) -> None:
    """The physical limit of a probe: trace, one forward, one backward to the input only."""
    bare(model, shape, parameters=False)


def checked(model: torch.nn.Module, shape: tuple[int, ...]) -> None:
    import initlint

    initlint.check(model, input_shapes=[shape])


def _timed(run, model, shape) -> float:
    started = time.perf_counter()
    run(model, shape)
    return time.perf_counter() - started


def _peak_rss_mb(args: list[str]) -> float:
    """Peak resident memory of a child process that runs this script with ``args``."""
    output = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return float(output.stdout.strip().splitlines()[-1])


def measure(name: str, rounds: int) -> dict:
    model, shape = build(name), ARCHITECTURES[name][2]
    checked(model, shape)  # warm-up: imports, caches
    bare(model, shape)
    runs = {"bare": bare, "bare_input_only": bare_input_only, "check": checked}
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for what, run in runs.items():
            times[what].append(_timed(run, model, shape))
    medians = {k: statistics.median(v) for k, v in times.items()}
    memory = {k: _peak_rss_mb(["--child", name, k]) for k in ("build", "bare", "check")}
    return {
        "model": name, "input_shape": list(shape), "rounds": rounds,
        "bare_s": round(medians["bare"], 4), "bare_input_only_s": round(medians["bare_input_only"], 4),
        "check_s": round(medians["check"], 4),
        "time_ratio": round(medians["check"] / medians["bare"], 2),
        "time_ratio_input_only": round(medians["check"] / medians["bare_input_only"], 2),
        "peak_mb": {k: round(v) for k, v in memory.items()},
        "memory_ratio": round(memory["check"] / memory["bare"], 2),
    }


def cli_startup(rounds: int) -> dict:
    """The CLI on a tiny model against importing torch, medians of fresh processes."""
    tiny = HERE.parent / "examples" / "healthy_mlp.py"
    torch_s = statistics.median(wall([sys.executable, "-c", "import torch"]) for _ in range(rounds))
    cli_s = statistics.median(
        wall([sys.executable, "-m", "initlint", "check", f"{tiny}:build"]) for _ in range(rounds)
    )
    return {"import_torch_s": round(torch_s, 3), "cli_tiny_s": round(cli_s, 3),
            "ratio": round(cli_s / torch_s, 2)}


def _child(name: str, what: str) -> None:
    model, shape = build(name), ARCHITECTURES[name][2]
    if what != "build":
        {"bare": bare, "check": checked}[what](model, shape)
    print(own_peak_mib())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    names = ["mlp_64x512"] if args.quick else list(ARCHITECTURES)
    rounds = 1 if args.quick else args.rounds
    result = {
        "machine": describe(),
        "models": [measure(name, rounds) for name in names],
        "cli": cli_startup(max(rounds, 3)),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

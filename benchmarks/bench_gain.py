"""What `initlint gain` costs: the search itself, in process, and the whole command against
`python -c "import torch"`, which bounds any command from below. Medians of fresh rounds after
one warm-up round. Prints one JSON object.

    python benchmarks/bench_gain.py            # tanh, sigmoid, relu at the README's depth 50; 5 rounds
    python benchmarks/bench_gain.py --quick    # tanh only, 1 round, no command-line timing
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from machine import describe, wall

from initlint.gain_report import measure_gains


def search_seconds(activation: str, depth: int, width: int, rounds: int) -> dict:
    measure_gains(activation, depth, width)  # warm-up: torch's first kernels, the quadrature
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        report = measure_gains(activation, depth, width)
        times.append(time.perf_counter() - started)
    best = report.recommended
    return {"activation": activation, "depth": depth, "width": width, "search_s": round(statistics.median(times), 3),
            "gain": best.gain if best else None}


def command_seconds(rounds: int) -> dict:
    torch_s = statistics.median(wall([sys.executable, "-c", "import torch"]) for _ in range(rounds))
    gain_s = statistics.median(
        wall([sys.executable, "-m", "initlint", "gain", "tanh", "--depth", "50"]) for _ in range(rounds))
    return {"import_torch_s": round(torch_s, 3), "cli_gain_tanh_s": round(gain_s, 3),
            "beyond_import_s": round(gain_s - torch_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick
    rounds = 1 if quick else 5
    activations = ["tanh"] if quick else ["tanh", "sigmoid", "relu"]
    document = {
        "machine": describe(),
        "search": [search_seconds(a, 50, 128, rounds) for a in activations],
        "cli": None if quick else command_seconds(rounds),
    }
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()

"""Check real architectures from torchvision and timm (random init, no download).

Prints one JSON line per model (library, model, input shape, trace mode, nodes, finding codes,
seconds, error) and a markdown table on stderr. The inputs are small (batch 8, 64x64 images)
so that the sweep fits in CI; vision transformers are built for that image size.

    python benchmarks/zoo_sweep.py            # the whole zoo
    python benchmarks/zoo_sweep.py --quick    # a representative subset (the test runs it)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Architecture:
    library: str
    name: str
    kwargs: dict = field(default_factory=dict)
    input_shape: tuple[int, ...] = (8, 3, 64, 64)
    quick: bool = False

    def build(self) -> torch.nn.Module:
        torch.manual_seed(0)
        if self.library == "torchvision":
            import torchvision

            return getattr(torchvision.models, self.name)(weights=None, **self.kwargs)
        import timm

        return timm.create_model(self.name, pretrained=False, **self.kwargs)


ZOO = (
    Architecture("torchvision", "resnet18", quick=True),
    Architecture("torchvision", "resnet50"),
    Architecture("torchvision", "mobilenet_v3_small", quick=True),
    Architecture("torchvision", "efficientnet_b0"),
    Architecture("torchvision", "densenet121"),
    Architecture("torchvision", "squeezenet1_1"),
    Architecture("torchvision", "shufflenet_v2_x0_5", quick=True),
    Architecture("torchvision", "regnet_y_400mf"),
    Architecture("torchvision", "convnext_tiny"),
    Architecture("torchvision", "vit_b_16", {"image_size": 64}),
    Architecture("torchvision", "swin_t", quick=True),
    Architecture("timm", "vit_tiny_patch16_224", {"img_size": 64}, quick=True),
    Architecture("timm", "convnext_atto", quick=True),
    Architecture("timm", "efficientnet_b0"),
    Architecture("timm", "nf_resnet26", quick=True),
    Architecture("timm", "mixer_s16_224", {"img_size": 64}),
    Architecture("timm", "resnet18d", quick=True),
)


def sweep_one(architecture: Architecture, check: Callable) -> dict:
    row = {"library": architecture.library, "model": architecture.name,
           "input_shape": list(architecture.input_shape)}
    started = time.perf_counter()
    try:
        report = check(architecture.build(), input_shapes=[architecture.input_shape], target=architecture.name)
    except Exception as error:  # a crash is the finding this sweep exists to catch
        return {**row, "error": f"{type(error).__name__}: {error}", "seconds": time.perf_counter() - started}
    first = report.to_dict()["nodes"][0]
    return {
        **row,
        "trace_mode": report.trace_mode,
        "nodes": len(report.graph.nodes),
        "findings": sorted(report.codes()),
        "input_std": first["std"],
        "seconds": round(time.perf_counter() - started, 2),
        "error": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="only the models marked quick")
    args = parser.parse_args()
    import initlint

    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for architecture in ZOO:
        if args.quick and not architecture.quick:
            continue
        row = sweep_one(architecture, initlint.check)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("| library | model | trace | nodes | findings | seconds |\n|---|---|---|---|---|---|", file=sys.stderr)
    for row in rows:
        findings = row["error"] or ", ".join(f"{c} x{row['findings'].count(c)}" for c in sorted(set(row["findings"]))) or "none"
        print(f"| {row['library']} | {row['model']} | {row.get('trace_mode', '-')} | {row.get('nodes', '-')} "
              f"| {findings} | {row['seconds']} |", file=sys.stderr)


if __name__ == "__main__":
    main()

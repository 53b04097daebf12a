"""The kernel probe on issue 12's stacks, and what it costs.

Stacks: 30 Linear -> activation layers of width 256 at init, probed with 512 rows (128 groups
of input pairs). For each, at the end of the body (before the last Linear): the output cosine
of inputs at cosine 0, 0.5 and 0.9, the secant slope (1 - C(0.9)) / 0.1, the gradient ratio
(the first layer's gradient std over the body end's) and IL105's verdict. Then the kernel
probe's share of `initlint.check`'s probe on a few models: the time of the trace and both
probes (`initlint.api.analyse`) and, on the same traced graph, of the kernel probe alone
(medians of 3 rounds). On a loaded machine, compare the share, not seconds.
Prints one JSON line per row.

    python benchmarks/kernel_stacks.py            # the stacks, then the cost on the MLP and ResNet-18
    python benchmarks/kernel_stacks.py --quick    # 10-layer stacks of width 128, the cost on the MLP
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn

import initlint
from initlint.api import CheckOptions, ModelSource, analyse
from initlint.kernel import probe_kernel
from initlint.rules._models import gain_init, mlp


def _kaiming_relu(linear: nn.Linear) -> None:
    nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
    nn.init.zeros_(linear.bias)


OUTPUT_CONSTANTS_ALONE = {"method": "renorm", "ignore": ["IL105", "IL501"]}
"""The renorm method's plan as it is: its judge, told of the kernel and the gradient, declines
the Linear rescales that make the tanh stack chaotic."""


def stacks(depth: int, width: int) -> dict[str, nn.Module]:
    return {
        "tanh after initlint fix --method renorm": initlint.fix(mlp(depth, width, nn.Tanh), **OUTPUT_CONSTANTS_ALONE),
        "relu after initlint fix --method renorm": initlint.fix(mlp(depth, width, nn.ReLU), **OUTPUT_CONSTANTS_ALONE),
        "tanh after initlint fix (kernel shaping)": initlint.fix(mlp(depth, width, nn.Tanh)),
        "relu after initlint fix (kernel shaping)": initlint.fix(mlp(depth, width, nn.ReLU)),
        "tanh after initlint fix --fold": initlint.fix(mlp(depth, width, nn.Tanh), fold=True),
        "relu after initlint fix --fold (looks-linear pairs)": initlint.fix(mlp(depth, width, nn.ReLU), fold=True),
        "relu, Kaiming": mlp(depth, width, nn.ReLU, _kaiming_relu),
        "tanh, Xavier gain 5/3": mlp(depth, width, nn.Tanh, gain_init(5 / 3)),
        "tanh, Xavier gain 1": mlp(depth, width, nn.Tanh, gain_init(1.0)),
    }


def kernel_row(name: str, model: nn.Module, rows: int, width: int) -> dict:
    report = initlint.check(model, input_shapes=[(rows, width)], select=["IL105"])
    body = [v for v in report.graph.body() if v.kernel is not None]
    first_layer = next(v for v in body if v.op != "placeholder")
    end = body[-1]
    return {
        "stack": name, "rows": rows, "end_node": end.name,
        "kernel": {key: round(value, 3) for key, value in end.kernel.to_dict().items()},
        "kernel_slope": round(end.kernel.slope, 2),
        "gradient_ratio": round(first_layer.stats.grad_std / end.stats.grad_std, 2),
        "il105": [f"{'collapse' if f.data['input_cos'] == 0 else 'chaos'} from {f.node}" for f in report.findings],
    }


def cost_models(quick: bool) -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    models = {"mlp_30x256": (mlp(30, 256, nn.ReLU, _kaiming_relu), (8, 256))}
    if not quick:
        import torchvision

        models["resnet18"] = (torchvision.models.resnet18(), (8, 3, 224, 224))
    return models


def cost_row(name: str, model: nn.Module, shape: tuple[int, ...], rounds: int = 3) -> dict:
    """Medians over ``rounds``, alternating: the trace and both probes, then the kernel probe
    alone on the graph that trace gave."""
    both, kernel = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        analysed = analyse(model, (), CheckOptions(input_shapes=[shape]), ModelSource())
        both.append(time.perf_counter() - started)
        started = time.perf_counter()
        probe_kernel(analysed.traced.graph_module, analysed.inputs)
        kernel.append(time.perf_counter() - started)
    both_s, kernel_s = statistics.median(both), statistics.median(kernel)
    return {"model": name, "input_shape": list(shape), "rounds": rounds, "trace_and_probes_s": round(both_s, 3),
            "kernel_probe_s": round(kernel_s, 3), "kernel_share": round(kernel_s / both_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small stacks and the MLP's cost only")
    arguments = parser.parse_args()
    depth, width = (10, 128) if arguments.quick else (30, 256)
    for name, model in stacks(depth, width).items():
        print(json.dumps({"depth": depth, "width": width, **kernel_row(name, model, 512, width)}), flush=True)
    for name, (model, shape) in cost_models(arguments.quick).items():
        print(json.dumps(cost_row(name, model, shape)), flush=True)


if __name__ == "__main__":
    main()

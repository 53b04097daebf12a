"""Does ``initlint fix`` make deep MLPs trainable? Train them on scikit-learn's digits.

Deep MLPs (Linear -> activation, width 128) are trained under one budget (Adam 1e-3, 15 epochs,
batch 64) from five initializations: PyTorch's default, Kaiming/Xavier with calculate_gain,
LSUV (the ``lsuv`` package), and ``initlint.fix`` (renorm nodes, and ``fold=True``) with each of
its methods: kernel shaping (the default) and ``--method renorm``.
Prints one JSON line per run on stdout, then a markdown table of mean test accuracy on stderr.

    python benchmarks/train_digits.py            # the full grid, several minutes on 2 cores
    python benchmarks/train_digits.py --quick    # one small case per init, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from collections import defaultdict

import torch
import torch.nn as nn

import initlint

ARCHITECTURES = {  # name -> (activation, depth)
    "sigmoid x20": (nn.Sigmoid, 20),
    "tanh x30": (nn.Tanh, 30),
    "relu x30": (nn.ReLU, 30),
    "gelu x30": (nn.GELU, 30),
    "selu x30": (nn.SELU, 30),
}
GAIN_NAMES = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.ReLU: "relu", nn.GELU: "relu", nn.SELU: "selu"}


def load_digits(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Standardized 8x8 digits, a fixed 80/20 split (no download: the data ships with sklearn)."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(x))
    train, test = order[:split], order[split:]
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-3)
    x = (x - mean) / std
    return x[train], y[train], x[test], y[test]


def mlp(activation: type[nn.Module], depth: int, width: int = 128) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(64, width), activation()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), activation()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def with_gain(model: nn.Sequential, activation: type[nn.Module]) -> nn.Module:
    name = GAIN_NAMES[activation]
    for layer in model:
        if isinstance(layer, nn.Linear):
            if name == "relu":
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            else:
                nn.init.xavier_normal_(layer.weight, gain=nn.init.calculate_gain(name))
            nn.init.zeros_(layer.bias)
    return model


def with_lsuv(model: nn.Module, batch: torch.Tensor) -> nn.Module:
    import lsuv

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints every step
        return lsuv.lsuv_with_singlebatch(model, batch, verbose=False)


def initialized(init: str, activation: type[nn.Module], depth: int, x_train: torch.Tensor) -> nn.Module:
    model = mlp(activation, depth)
    if init == "default":
        return model
    if init == "calculate_gain":
        return with_gain(model, activation)
    if init == "lsuv":
        return with_lsuv(model, x_train[:256])
    method = next((name for name in ("dks", "renorm") if f"--method {name}" in init), None)
    return initlint.fix(model, fold=init.endswith("--fold"), method=method)


def train(model: nn.Module, data: tuple[torch.Tensor, ...], epochs: int, seed: int) -> tuple[float, float]:
    x_train, y_train, x_test, y_test = data
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(epochs):
        for batch in torch.randperm(len(x_train), generator=generator).split(64):
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    return accuracy, loss.item()


INITS = ("default", "calculate_gain", "lsuv", "initlint fix", "initlint fix --fold", "initlint fix --method renorm",
         "initlint fix --method dks --fold")
"""``initlint fix`` is kernel shaping, ``--fold`` the renorm method folded (the defaults); the other two
methods' outputs beside them."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="sigmoid x6 only, 2 epochs, 1 seed")
    args = parser.parse_args()
    architectures = {"sigmoid x6": (nn.Sigmoid, 6)} if args.quick else ARCHITECTURES
    seeds, epochs = (1, 2) if args.quick else (args.seeds, args.epochs)
    torch.set_num_threads(1)
    data = load_digits()
    results: dict[tuple[str, str], list[float]] = defaultdict(list)
    for arch, (activation, depth) in architectures.items():
        for init in INITS:
            for seed in range(seeds):
                torch.manual_seed(seed)
                started = time.perf_counter()
                model = initialized(init, activation, depth, data[0])
                accuracy, loss = train(model, data, epochs, seed)
                results[arch, init].append(accuracy)
                print(json.dumps({"arch": arch, "init": init, "seed": seed, "epochs": epochs,
                                  "test_accuracy": round(accuracy, 4), "final_train_loss": round(loss, 4),
                                  "seconds": round(time.perf_counter() - started, 2)}), flush=True)
    header = "| init | " + " | ".join(architectures) + " |"
    rows = [header, "|" + "---|" * (len(architectures) + 1)]
    for init in INITS:
        cells = [f"{statistics.mean(results[arch, init]):.2f}" for arch in architectures]
        rows.append(f"| {init} | " + " | ".join(cells) + " |")
    print("\n".join(rows), file=sys.stderr)


if __name__ == "__main__":
    main()

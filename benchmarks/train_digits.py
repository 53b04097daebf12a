"""Does ``initlint fix`` make deep networks trainable? Train them on scikit-learn's digits.

Each row of ``digits_models.ROWS`` (MLPs x30 of five activations, 16-layer plain CNNs, a 24-block
residual CNN, a 6-layer pre-LN transformer over image rows, an SE-CNN whose gates an LSUV-style loop
pinned; ``MORE_ROWS``, MLPs x30 of six other activations and the tanh and ReLU stacks made wider or
deeper, on request) is trained under one budget (batch 64; Adam 1e-3, or SGD 0.01 with momentum 0.9;
the row's epochs) from each initialization: PyTorch's default, Kaiming/Xavier with calculate_gain,
LSUV (the ``lsuv`` package), Fixup (the residual CNN only), and ``initlint.fix``: renorm nodes
(kernel shaping, the default) and ``fold=True`` (kernel shaping by input scales alone, renorm
constants for ReLU-like activations, folded into the model's weights: the default with --fold).
``--inits all`` adds three other method/output pairs. Prints one JSON line per run on stdout, then
markdown tables of mean test accuracy and the issue-12 criterion on stderr.

    python benchmarks/train_digits.py                         # the full grid: about an hour on one core
    python benchmarks/train_digits.py --rows "relu x30" "resnet x24" --optimizer sgd
    python benchmarks/train_digits.py --quick                 # one small case per init, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import defaultdict

import torch
import torch.nn as nn

import initlint
from digits_models import EVERY_ROW, MLP, MORE_ROWS, ROWS, Row, lsuv_degenerate, with_fixup, with_gain, with_lsuv

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


BASELINES = ("default", "calculate_gain", "lsuv", "fixup")
FIXES = ("initlint fix", "initlint fix --fold")
"""The two fix outputs of issue 12's criterion: kernel shaping as renorm nodes, and dks-scale
folded (the defaults without and with --fold)."""
OTHER_FIXES = ("initlint fix --method renorm", "initlint fix --method renorm --fold", "initlint fix --method dks --fold")
SGD_LR = 0.01
"""SGD's step, the same for every init: with momentum 0.9 the effective step is 0.1, the usual
choice for networks without normalization (0.05, as in issue 12's CNN report, is 0.5)."""


def build(row: Row, init: str, x_train: torch.Tensor) -> nn.Module:
    model = row.build()
    batch = x_train[:256].reshape(-1, *row.input_shape)
    if row.degenerate:
        model = lsuv_degenerate(model, batch)
    if init == "default":
        return model
    if init == "calculate_gain":
        return with_gain(model)
    if init == "lsuv":
        return with_lsuv(model, batch)
    if init == "fixup":
        return with_fixup(model)
    method = init.partition("--method ")[2].split(" ")[0] or None
    return initlint.fix(model, fold=init.endswith("--fold"), method=method,
                        input_shapes=[(64, *row.input_shape)])


def optimizer_for(name: str, model: nn.Module) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=1e-3)
    return torch.optim.SGD(model.parameters(), lr=SGD_LR, momentum=0.9)


def train(model: nn.Module, data: tuple[torch.Tensor, ...], shape: tuple[int, ...], optimizer_name: str,
          epochs: int, seed: int) -> tuple[float, float]:
    """Test accuracy and the last training loss; a non-finite loss stops training (accuracy of
    the model as it is then, NaN logits count as wrong)."""
    x_train, y_train, x_test, y_test = (t.reshape(-1, *shape) if t.is_floating_point() else t for t in data)
    optimizer = optimizer_for(optimizer_name, model)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(epochs):
        for batch in torch.randperm(len(x_train), generator=generator).split(64):
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            if not torch.isfinite(loss):
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if not torch.isfinite(loss):
            break
    model.eval()
    with torch.no_grad():
        logits = model(x_test)
        right = (logits.argmax(1) == y_test) & torch.isfinite(logits).all(1)
    return right.float().mean().item(), loss.item()


def tables(results: dict, rows: list[str], inits: list[str], optimizers: list[str]) -> str:
    """Per optimizer: mean test accuracy (a row, an init), with the runs that went NaN counted,
    and whether both fix outputs reach the best baseline minus 2 points."""
    out = []
    for opt in optimizers:
        out.append(f"\n{opt}:\n")
        out.append("| row | " + " | ".join(inits) + " | best baseline | criterion |")
        out.append("|" + "---|" * (len(inits) + 3))
        for row in rows:
            cells, means = [], {}
            for init in inits:
                runs = results.get((opt, row, init))
                if not runs:
                    cells.append("–")
                    continue
                means[init] = statistics.mean(acc for acc, _ in runs)
                nans = sum(not math.isfinite(loss) for _, loss in runs)
                cells.append(f"{means[init]:.3f}" + (f" ({nans} NaN)" if nans else ""))
            best = max((means[b] for b in BASELINES if b in means), default=None)
            verdict = "–"
            if best is not None and all(f in means for f in FIXES):
                short = [f for f in FIXES if means[f] < best - 0.02]
                verdict = "pass" if not short else "fail: " + ", ".join(f.removeprefix("initlint fix").strip()
                                                                     or "renorm nodes" for f in short)
            out.append(f"| {row} | " + " | ".join(cells) + f" | {'' if best is None else f'{best:.3f}'} | {verdict} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="instead of each row's own")
    parser.add_argument("--optimizer", choices=("adam", "sgd", "both"), default="both")
    parser.add_argument("--rows", nargs="+", choices=list(EVERY_ROW), default=list(ROWS), metavar="ROW",
                        help=f"rows to train (default issue 12's): {', '.join(map(repr, ROWS))}; also "
                             f"{', '.join(map(repr, MORE_ROWS))}")
    parser.add_argument("--inits", nargs="+", choices=("criterion", "all", *BASELINES, *FIXES, *OTHER_FIXES),
                        default=["criterion"], metavar="INIT",
                        help="'criterion' (the baselines and the two fix outputs of the criterion, the default), "
                             "'all' (also the other fix methods), or init names")
    parser.add_argument("--quick", action="store_true", help="sigmoid x6 only, Adam, 2 epochs, 1 seed, every init")
    parser.add_argument("--table", metavar="JSONL", help="print the tables of earlier runs' JSON lines, train nothing")
    args = parser.parse_args()
    if args.table:
        print_tables([json.loads(line) for line in open(args.table, encoding="utf-8")])
        return
    torch.set_num_threads(1)
    if args.quick:
        rows = {"sigmoid x6": Row(lambda: MLP("sigmoid", 6), (64,), 2)}
        optimizers, seeds, inits = ["adam"], 1, [*BASELINES[:3], *FIXES, *OTHER_FIXES]
    else:
        rows = {name: EVERY_ROW[name] for name in args.rows}
        optimizers = ["adam", "sgd"] if args.optimizer == "both" else [args.optimizer]
        groups = {"criterion": [*BASELINES, *FIXES], "all": [*BASELINES, *FIXES, *OTHER_FIXES]}
        chosen = {init for name in args.inits for init in groups.get(name, [name])}
        seeds, inits = args.seeds, [init for init in groups["all"] if init in chosen]
    data = load_digits()
    runs = []
    for name, row in rows.items():
        epochs = args.epochs or row.epochs
        for opt in optimizers:
            for init in inits:
                if init == "fixup" and not row.fixup:
                    continue
                for seed in range(seeds):
                    torch.manual_seed(seed)
                    started = time.perf_counter()
                    model = build(row, init, data[0])
                    accuracy, loss = train(model, data, row.input_shape, opt, epochs, seed)
                    runs.append({"arch": name, "init": init, "optimizer": opt, "seed": seed, "epochs": epochs,
                                 "test_accuracy": round(accuracy, 4),
                                 "final_train_loss": round(loss, 4) if math.isfinite(loss) else str(loss),
                                 "seconds": round(time.perf_counter() - started, 2)})
                    print(json.dumps(runs[-1]), flush=True)
    print_tables(runs)


def print_tables(runs: list[dict]) -> None:
    """The tables of ``runs`` (JSON lines as printed) on stderr, in the order rows and inits first appear."""
    results: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for run in runs:
        results[run["optimizer"], run["arch"], run["init"]].append((run["test_accuracy"], float(run["final_train_loss"])))
    order = lambda key: list(dict.fromkeys(run[key] for run in runs))  # noqa: E731
    inits = [init for init in [*BASELINES, *FIXES, *OTHER_FIXES] if init in order("init")]
    print(tables(results, order("arch"), inits, order("optimizer")), file=sys.stderr)


if __name__ == "__main__":
    main()

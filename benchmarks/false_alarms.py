"""False alarms: healthy textbook models, checked at the resolution they are used at.

Every model here is the design of a paper or a library at its default init, so every finding at
warning level or above is a false alarm; info findings are listed with them. The models:
torchvision's resnet18/50, mobilenet_v3_large, efficientnet_b0, convnext_tiny, vit_b_16 and swin_t
at 224x224; timm's equivalents when timm is installed (else they are skipped, with a note on
stderr); a CIFAR ResNet-20 at 32x32; the textbook max-pool and strided Kaiming CNNs; nn.Transformer
encoders (post- and pre-LN); and every rule's clean examples (with their own rule) and the bundled healthy example.
Batches are small (2 images at 224) so that the whole run fits a CPU. Each model goes through
``initlint.check`` with every rule, as a user's check would (a clean example with its rule); one JSON line per model on stdout,
a markdown table on stderr.

    python benchmarks/false_alarms.py            # everything (minutes on a CPU)
    python benchmarks/false_alarms.py --quick    # a few small models (the test suite runs it)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parent.parent
FAILING = ("warning", "error")
"""Severities that fail a check at the default fail level: a false alarm here."""


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...] | None
    quick: bool = False
    select: str | None = None
    """A rule's clean example is clean for that rule: it is checked with that rule alone."""


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None)
    return build


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False)
    return build


class _CifarBlock(nn.Module):
    """He et al. (2016)'s basic block, with a 1x1 conv shortcut where the shape changes."""

    def __init__(self, inputs: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = nn.Identity() if stride == 1 and inputs == width else nn.Sequential(
            nn.Conv2d(inputs, width, 1, stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.shortcut(x) + self.bn2(self.conv2(out)))


def cifar_resnet20() -> nn.Module:
    """ResNet-20 for CIFAR-10: three stages of three basic blocks, 16/32/64 channels, Kaiming init."""
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    inputs = 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(3):
            layers.append(_CifarBlock(inputs, width, 2 if stage and not block else 1))
            inputs = width
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model


def _encoder(norm_first: bool, width: int = 256, layers: int = 6) -> Callable[[], nn.Module]:
    """nn.TransformerEncoder as its docs build it (8 heads, 4x feed-forward; post-LN by default)."""
    def build() -> nn.Module:
        layer = nn.TransformerEncoderLayer(width, 8, 4 * width, batch_first=True, norm_first=norm_first)
        return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
    return build


def _rule_examples() -> list[Case]:
    """Every rule's clean examples (each with its own rule: they are minimal models, and some
    keep a fault that another rule is for, e.g. IL104's MLP keeps PyTorch's default Linear
    init, IL601's finding), and the bundled healthy example (with every rule)."""
    from initlint.load import load_target
    from initlint.rules import ALL_RULES

    cases = [
        Case(f"clean example of {rule.code}", example.build.__name__, example.build,
             example.input_shapes[0] if example.input_shapes else None, select=rule.code)
        for rule in ALL_RULES for example in rule.clean
    ]
    healthy = str(ROOT / "examples" / "healthy_mlp.py") + ":build"
    return [*cases, Case("bundled example", "healthy_mlp", lambda: load_target(healthy).model, None, quick=True)]


def _textbook() -> list[Case]:
    from initlint.rules._models import max_pool_cnn, strided_cnn

    image = (2, 3, 224, 224)
    return [
        *(Case("torchvision", name, _torchvision(name), image) for name in (
            "resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "vit_b_16", "swin_t")),
        *(Case("timm", name, _timm(name), image) for name in (
            "resnet50", "efficientnet_b0", "convnext_tiny", "mobilenetv3_small_100", "regnety_002")),
        Case("CIFAR", "resnet20", cifar_resnet20, (4, 3, 32, 32), quick=True),
        Case("plain CNN", "max_pool_cnn", max_pool_cnn, (4, 3, 64, 64), quick=True),
        Case("plain CNN", "strided_cnn", strided_cnn, (4, 3, 64, 64)),
        Case("nn.Transformer", "encoder_post_ln", _encoder(False), (4, 64, 256)),
        Case("nn.Transformer", "encoder_pre_ln", _encoder(True), (4, 64, 256)),
        Case("nn.Transformer", "encoder_2x64", _encoder(False, 64, 2), (4, 16, 64), quick=True),
    ]


def measure(case: Case) -> dict:
    import initlint

    torch.manual_seed(0)
    model = case.build()
    started = time.perf_counter()
    report = initlint.check(model, input_shapes=[case.input_shape] if case.input_shape else None,
                            select=case.select or "ALL")
    findings = [{"code": f.code, "severity": f.severity, "module": f.module} for f in report.findings]
    return {
        "group": case.group,
        "model": case.name,
        "input": list(report.inputs[0].to_dict()["shape"]),
        "capture": report.trace_mode,
        "nodes": len(report.graph.nodes),
        "findings": findings,
        "false_alarms": sum(f["severity"] in FAILING for f in findings),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _describe(findings: list[dict]) -> str:
    return ", ".join(f"{f['code']} {f['severity']} ({f['module']})" for f in findings) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few small models, in seconds")
    arguments = parser.parse_args()
    cases = [c for c in _rule_examples() + _textbook() if c.quick or not arguments.quick]
    if importlib.util.find_spec("timm") is None:
        cases = [c for c in cases if c.group != "timm"]
        print("timm is not installed: its models are skipped (pip install timm to check them)", file=sys.stderr)
    rows = []
    for case in cases:
        rows.append(measure(case))
        print(json.dumps(rows[-1]), flush=True)
    print("| group | model | input | capture | findings | seconds |", file=sys.stderr)
    print("|---|---|---|---|---|---|", file=sys.stderr)
    for row in rows:
        shape = "x".join(map(str, row["input"]))
        print(f"| {row['group']} | {row['model']} | {shape} | {row['capture']} | {_describe(row['findings'])} "
              f"| {row['seconds']:.2f} |", file=sys.stderr)
    print(f"{sum(r['false_alarms'] for r in rows)} finding(s) at warning level or above in {len(rows)} models",
          file=sys.stderr)


if __name__ == "__main__":
    main()

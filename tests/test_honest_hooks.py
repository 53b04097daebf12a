"""Hooks mode is honest (the summary line says what it skipped; --require-graph refuses it),
leaves the model's view of its inputs alone, unwraps structured outputs, and probes a model
whose training forward needs targets in eval mode, saying so."""

from __future__ import annotations

import json
from collections import namedtuple
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn

import initlint
from initlint.errors import InitlintError
from initlint.model_outputs import backward_outputs, unwrap
from initlint.rules import ALL_RULES

UNTRACEABLE = """
import torch
from torch import nn

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)   # data-dependent: fx cannot trace it

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(Block(), nn.Tanh(), Block())

    def forward(self, x):
        return self.blocks(x)

def build():
    return Net()
"""


def test_summary_line_counts_the_skipped_rules_and_says_why(run_cli, model_file):
    path = model_file(UNTRACEABLE)
    result = run_cli("check", f"{path}:build")
    skipped = sum(1 for r in ALL_RULES if r.needs_structure)
    summary = next(line for line in result.stdout.splitlines() if line.startswith(f"{path}:build:"))
    assert f"finding(s); {skipped} of {len(ALL_RULES)} rules skipped (hooks mode: torch.fx could not trace Net" \
        in summary


def test_require_graph_refuses_hooks_mode(run_cli, model_file, tmp_path):
    path = model_file(UNTRACEABLE)
    result = run_cli("check", f"{path}:build", "--require-graph")
    assert result.exit_code == 2 and "require-graph is set" in result.stderr and "leaf-modules" in result.stderr
    (tmp_path / "pyproject.toml").write_text("[tool.initlint]\nrequire-graph = true\n")
    assert run_cli("check", f"{path}:build", "--config", str(tmp_path / "pyproject.toml")).exit_code == 2
    namespace: dict = {}
    exec(UNTRACEABLE, namespace)
    with pytest.raises(InitlintError, match="require-graph"):
        initlint.check(namespace["build"](), require_graph=True)


def test_leaf_modules_name_a_class_of_the_target_file(run_cli, model_file, tmp_path):
    path = model_file(UNTRACEABLE)
    (tmp_path / "pyproject.toml").write_text('[tool.initlint]\nleaf-modules = ["model.Block"]\n')
    result = run_cli("check", f"{path}:build", "--require-graph", "--output-format", "json",
                     "--config", str(tmp_path / "pyproject.toml"))
    assert result.exit_code in (0, 1), result.stderr
    assert json.loads(result.stdout)["reports"][0]["trace"]["mode"] == "fx"  # Block kept whole


class SetsRequiresGrad(nn.Module):
    """Like Wav2Vec2's feature encoder: marks a view of its input as requiring grad, which torch
    allows only while the input itself does not require grad (a leaf)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3)

    def forward(self, x):
        h = x[:, None]
        if self.training:
            h.requires_grad = True
        for _ in range(int(h.shape[-1] > 0)):  # python control flow on a shape: fx fails on it
            h = self.conv(h)
        return h.mean() if h.sum() > 1e9 else h


def test_the_probe_does_not_change_how_the_model_sees_its_inputs():
    report = initlint.check(SetsRequiresGrad(), input_shapes=[(4, 16)])
    assert report.trace_mode == "hooks" and report.probe_note is None
    conv = next(n for n in report.to_dict()["nodes"] if n["module"] == "conv")
    assert conv["grad_std"] == pytest.approx(1.0, rel=0.15)  # the output's own N(0, 1) cotangent


class Detector(nn.Module):
    """As torchvision's detectors: the training forward wants targets."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())

    def forward(self, images, targets=None):
        if self.training and targets is None:
            raise ValueError("targets should not be none when in training mode")
        if images.isnan().any():  # data-dependent, as in real detectors: fx cannot trace it
            return []
        return [{"boxes": self.backbone(images).flatten(1)[:, :4], "scores": self.backbone(images).mean((1, 2, 3))}]


def test_a_model_that_needs_targets_in_training_is_probed_in_eval_mode():
    model = Detector()
    report = initlint.check(model, input_shapes=[(2, 3, 8, 8)])
    assert "probed in eval mode" in report.probe_note and "targets should not be none" in report.probe_note
    assert model.training  # the model itself is left as it was
    bn = next(n for n in report.to_dict()["nodes"] if n["module"] == "backbone.1")
    conv = next(n for n in report.to_dict()["nodes"] if n["module"] == "backbone.0")
    # eval BatchNorm at init (running mean 0, var 1, eps 1e-5) divides by sqrt(1 + 1e-5) only
    assert bn["std"] == pytest.approx(conv["std"] / (1 + 1e-5) ** 0.5, rel=1e-4)


def test_a_train_and_eval_failure_reports_the_train_error():
    class Broken(Detector):
        def forward(self, images, targets=None):
            raise RuntimeError("train-mode failure" if self.training else "eval-mode failure")

    with pytest.raises(InitlintError, match="train-mode failure"):
        initlint.check(Broken(), input_shapes=[(2, 3, 8, 8)])


@dataclass
class Output:
    loss: torch.Tensor | None
    logits: torch.Tensor
    hidden_states: torch.Tensor


Pair = namedtuple("Pair", ["first", "second"])


def test_unwrap_dataclasses_namedtuples_and_drops_none():
    a, b = torch.ones(1), torch.zeros(1)
    plain = unwrap([Output(None, a, b), Pair(a, {"x": None, "y": b})])
    assert plain == (({"logits": a, "hidden_states": b}), {"first": a, "second": {"y": b}})
    assert backward_outputs(Output(None, a, b)) == [a]
    assert backward_outputs(Pair(a, b)) == [a, b]


class Head(nn.Module):
    """Returns the logits and the hidden state they are computed from; the head is zero."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)
        nn.init.zeros_(self.head.weight)

    def forward(self, x):
        h = self.body(x)
        return Output(loss=None, logits=self.head(h), hidden_states=h)


def test_backward_starts_at_the_logits_only():
    nodes = {n["name"]: n for n in initlint.check(Head(), input_shapes=[(64, 6)]).to_dict()["nodes"]}
    # a zero head passes no gradient back: had the backward also started at hidden_states, the
    # body's output would carry that N(0, 1) cotangent
    assert nodes["head"]["grad_std"] == pytest.approx(1.0, rel=0.2)  # 192 draws: SE of the std 0.05
    assert nodes["body"]["grad_std"] == 0.0

"""When torch.fx cannot trace: the hook fallback, the leaf registry and the in-place guard."""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn as nn

import initlint
from initlint.api import CheckOptions, ModelSource, analyse
from initlint.hooks import probe_with_hooks
from initlint.inputs import InputSpec, draw
from initlint.locations import module_definition_sites
from initlint.probe import STATS
from initlint.rules import ALL_RULES
from initlint.trace import trace


class EarlyExit(nn.Module):
    """A stack with data-dependent control flow (fx cannot trace it) and a dict output."""

    def __init__(self, activation: type[nn.Module] = nn.Tanh, depth: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(nn.Linear(32, 32) for _ in range(depth))
        self.act = activation()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for layer in self.layers:
            x = self.act(layer(x))
            if x.abs().max() > 1e6:
                break
        return {"features": x, "score": x.sum(dim=1)}


def saturated() -> EarlyExit:
    model = EarlyExit()
    for layer in model.layers:
        nn.init.normal_(layer.weight)  # std 1 instead of 1/sqrt(32): tanh saturates
    return model


def test_untraceable_model_is_probed_with_hooks_and_says_so():
    report = initlint.check(saturated())
    trace_info = report.to_dict()["trace"]
    assert trace_info["mode"] == "hooks"
    assert "torch.fx could not trace EarlyExit" in trace_info["note"]
    structural = sorted(r.code for r in ALL_RULES if r.needs_structure)
    assert trace_info["skipped_rules"] == structural and "IL101" in structural
    assert set(report.codes()) == {"IL201"} and len(report.findings) == 6  # one per tanh call
    assert all(f.module == "act" for f in report.findings)


def test_hooks_and_fx_measure_the_same_layers_identically():
    """On a model fx can trace, forcing the hook path gives the same numbers per leaf call."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.Sigmoid(), nn.Linear(32, 4))
    fx_graph = analyse(model, (), CheckOptions(), ModelSource()).traced.graph_module
    inputs = draw([InputSpec("input", (8, 16))], 0, torch.device("cpu"), torch.float32)
    hooked, _ = probe_with_hooks(model, inputs, 0, (), module_definition_sites(model, {}), None, "forced")

    def by_module(graph_module):
        return {n.target: n.meta[STATS] for n in graph_module.graph.nodes if n.op == "call_module"}

    fx_stats, hook_stats = by_module(fx_graph), by_module(hooked.graph_module)
    assert fx_stats.keys() == hook_stats.keys() == {"0", "1", "2", "3", "4"}
    for name, expected in fx_stats.items():
        got = hook_stats[name]
        for field in ("mean", "std", "sample_std", "grad_std", "saturated_fraction"):
            want = getattr(expected, field)  # saturated_fraction is None for non-saturating layers
            assert getattr(got, field) == (None if want is None else pytest.approx(want, rel=1e-5)), (name, field)


def test_a_nan_weight_is_found_in_hooks_mode():
    model = EarlyExit(nn.ReLU)
    with torch.no_grad():
        model.layers[2].weight[5, 5] = float("nan")
    report = initlint.check(model)
    assert report.trace_mode == "hooks"
    (finding,) = [f for f in report.findings if f.code == "IL001"]
    assert finding.module == "layers.2" and finding.severity == "error"


def test_hooks_mode_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Dropout(0.5))
    wrapper = EarlyExit()
    wrapper.layers = nn.ModuleList([model])
    wrapper.eval()
    before = {k: v.clone() for k, v in wrapper.state_dict().items()}
    initlint.check(wrapper, input_shapes=[(8, 8)])
    assert not wrapper.training
    assert all(torch.equal(before[k], v) for k, v in wrapper.state_dict().items())


def test_fix_refuses_an_untraceable_model(run_cli, model_file):
    path = model_file(
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.lin = nn.Linear(4, 4)\n"
        "    def forward(self, x):\n        return self.lin(x) if x.sum() > 0 else x\n"
        "def build():\n    return Net()\n"
    )
    result = run_cli("fix", f"{path}:build", "-o", str(path.parent / "out"))
    assert result.exit_code == 2 and "leaf module" in result.stderr and "Traceback" not in result.stderr
    assert not (path.parent / "out").exists()
    assert run_cli("check", f"{path}:build").exit_code == 0  # check still works, with hooks


def test_a_library_registry_of_untraceable_modules_keeps_them_whole(monkeypatch):
    """A module that timm registers as untraceable becomes a leaf, so fx traces the rest."""
    class Untraceable(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    model = nn.Sequential(nn.Linear(8, 8), Untraceable(), nn.ReLU())
    assert initlint.check(model).trace_mode == "hooks"
    registry = types.SimpleNamespace(get_notrace_modules=lambda: [Untraceable], get_notrace_functions=list)
    monkeypatch.setitem(sys.modules, "timm.layers", registry)
    assert initlint.check(model).trace_mode == "fx"


class InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(16, 16)
        self.gain = nn.Parameter(torch.tensor(3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(2.0)  # on the probe input, a leaf that needs a gradient
        y = self.lin(x)
        y.mul_(self.gain)  # its result is unused: pytorch issue 68301
        y += 1
        return torch.relu_(y)


def test_in_place_calls_are_kept_and_run_out_of_place():
    model = InPlace()
    traced = trace(model).graph_module
    x = torch.randn(8, 16)
    assert torch.equal(traced(x.clone()), model(x.clone()))
    report = initlint.check(model, input_shapes=[(8, 16)])
    std = {n["name"]: n["std"] for n in report.to_dict()["nodes"]}
    assert std["mul_"] == pytest.approx(2 * std["x"], rel=1e-6)  # the doubling is measured
    assert std["mul__1"] == pytest.approx(3 * std["lin"], rel=1e-5)
    assert model.gain.item() == 3.0

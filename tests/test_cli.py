"""The command line: exit codes, formats, rule selection, output files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import initlint

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BROKEN = f"{EXAMPLES / 'deep_sigmoid_mlp.py'}:build"
HEALTHY = f"{EXAMPLES / 'healthy_mlp.py'}:build"


def test_healthy_model_exits_0(run_cli):
    result = run_cli("check", HEALTHY)
    assert result.exit_code == 0, result.output
    assert "0 finding(s)" in result.stdout


def test_findings_exit_1_with_file_line_and_code(run_cli):
    result = run_cli("check", BROKEN)
    assert result.exit_code == 1
    first = result.stdout.splitlines()[0]
    assert first.startswith("examples/deep_sigmoid_mlp.py:") or "deep_sigmoid_mlp.py:" in first.split(" ")[0]
    assert " IL101 variance-drift " in result.stdout and " IL501 gradient-drift " in result.stdout


def test_json_report_follows_the_contract(run_cli):
    result = run_cli("check", BROKEN, "--output-format", "json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["initlint"] == initlint.__version__
    (report,) = document["reports"]
    assert report["target"] == BROKEN
    assert report["trace"]["mode"] == "fx" and report["trace"]["nodes"] == len(report["nodes"]) + 1
    finding = report["findings"][0]
    assert set(finding) >= {"code", "name", "severity", "node", "module", "message", "data", "location"}
    assert finding["location"]["file"].endswith("deep_sigmoid_mlp.py") and finding["location"]["line"] > 0
    node = report["nodes"][1]
    assert set(node) >= {"name", "op", "target", "module", "depth", "shape", "mean", "std",
                         "zero_fraction", "saturated_fraction", "grad_std"}
    assert report["inputs"][0]["inferred_from"]


@pytest.mark.parametrize(
    "args, code",
    [
        (("--select", "IL3"), 0),
        (("--ignore", "IL101,IL105,IL501"), 0),
        (("--ignore", "variance-drift", "--ignore", "kernel-collapse", "--ignore", "IL5"), 0),
        (("--select", "IL101"), 1),
        (("--fail-level", "error"), 1),
        (("--exit-zero",), 0),
    ],
)
def test_selection_and_fail_level(run_cli, args, code):
    assert run_cli("check", BROKEN, *args).exit_code == code


def test_fail_level_error_ignores_warnings(run_cli):
    body_pool = "initlint.rules.pooling_shrinkage:eight_by_eight_pool_in_body"  # warnings only
    assert run_cli("check", body_pool).exit_code == 1
    assert run_cli("check", body_pool, "--fail-level", "error").exit_code == 0


def test_info_findings_pass_the_default_fail_level(run_cli):
    """A global pool into the head is reported as info: it never fails a check by default."""
    untouched = f"{EXAMPLES / 'se_resnet_lsuv.py'}:build_untouched"
    assert run_cli("check", untouched).exit_code == 0
    assert run_cli("check", untouched, "--fail-level", "info").exit_code == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (("--select", "IL999"), "unknown rule code 'IL999'"),
        (("--input-shape", "8,x"), "not a comma-separated list"),
        (("--device", "tpu"), "Invalid value"),
        (("--input-shape", "8,3"), "failed"),
    ],
)
def test_usage_errors_exit_2(run_cli, args, message):
    result = run_cli("check", BROKEN, *args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_exit_zero_never_hides_usage_errors(run_cli):
    assert run_cli("check", "missing.py:build", "--exit-zero").exit_code == 2


def test_output_file_is_written_once_and_needs_force(run_cli, tmp_path):
    out = tmp_path / "report.json"
    assert run_cli("check", HEALTHY, "--output-format", "json", "-o", str(out)).exit_code == 0
    first = out.read_text()
    assert json.loads(first)["reports"][0]["findings"] == []
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would, not mkstemp's 0600
    again = run_cli("check", HEALTHY, "-o", str(out))
    assert again.exit_code == 2 and "--force" in again.stderr and out.read_text() == first
    assert run_cli("check", HEALTHY, "-o", str(out), "--force").exit_code == 0
    assert out.read_text() != first  # text now
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary files left


def test_python_dash_m_and_version():
    result = subprocess.run(
        [sys.executable, "-m", "initlint", "--version"], capture_output=True, text=True, check=True
    )
    assert initlint.__version__ in result.stdout


def test_same_seed_same_report_other_seed_other_numbers(run_cli):
    def numbers(seed):
        document = json.loads(run_cli("check", BROKEN, "--output-format", "json", "--seed", seed).stdout)
        (report,) = document["reports"]
        return [f["data"] for f in report["findings"]], [n["std"] for n in report["nodes"]]

    assert numbers("3") == numbers("3")
    assert numbers("3")[1] != numbers("4")[1]


def test_a_factory_that_draws_unseeded_weights_gives_the_same_report_on_every_run(run_cli, model_file):
    """torch's RNG is seeded by --seed while the factory runs, and left as it was after."""
    import torch

    path = model_file("""
        import torch.nn as nn

        def build():
            return nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))
    """)

    def stds(*seed: str) -> list[float]:
        document = json.loads(run_cli("check", f"{path}:build", "--output-format", "json", *seed).stdout)
        return [n["std"] for n in document["reports"][0]["nodes"]]

    torch.manual_seed(123)
    first = stds()
    after = torch.rand(1)
    torch.manual_seed(456)
    assert stds() == first and stds("--seed", "0") == first and stds("--seed", "1") != first
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after)  # the caller's RNG stream, untouched by the factory


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_exits_2(run_cli):
    result = run_cli("check", HEALTHY, "--device", "cuda")
    assert result.exit_code == 2 and "--device cpu" in result.stderr


def test_concise_is_one_line_per_finding(run_cli):
    text = run_cli("check", BROKEN).stdout.splitlines()
    concise = run_cli("check", BROKEN, "--output-format", "concise").stdout.splitlines()
    assert len(concise) == len(text) - 1  # the text format adds a summary line
    assert all(line.split(": ")[1].split()[0] in ("IL101", "IL105", "IL501") for line in concise)


def test_github_annotations(run_cli, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)
    result = run_cli("check", "examples/deep_sigmoid_mlp.py:build", "--output-format", "github")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith(("::error file=examples/deep_sigmoid_mlp.py,line=",
                                          "::warning file=examples/deep_sigmoid_mlp.py,line=")) for line in lines)
    assert ",title=IL101 variance-drift::" in result.stdout
    assert "\n" not in lines[0] and "%" not in lines[0].split("::")[2].replace("%25", "")


def test_json_is_the_same_on_every_run_and_timings_are_opt_in(run_cli, model_file, monkeypatch):
    from conftest import DEEP_SIGMOID_NET

    path = model_file(DEEP_SIGMOID_NET, "net.py")
    monkeypatch.chdir(path.parent)
    first, second = (run_cli("check", "net.py:build", "--output-format", "json").stdout for _ in range(2))
    assert first == second and '"seconds"' not in first
    timed = json.loads(run_cli("check", "net.py:build", "--output-format", "json", "--timings").stdout)
    assert timed["reports"][0]["seconds"] > 0

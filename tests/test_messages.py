"""What a person reads: module paths rather than fx node names, the user's own line before a
library's, severity and module in every human format."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DEEP_SIGMOID_NET

TOP_LEVEL_SEQUENTIAL = """
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(*[m for _ in range(12) for m in (nn.Linear(32, 32), nn.Sigmoid())])
"""

LIBRARY = """
import torch
from torch import nn

class Deep(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(*[m for _ in range(12) for m in (nn.Linear(32, 32), nn.Sigmoid())])

    def forward(self, x):
        return self.body(x)
"""

USES_LIBRARY = """
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent / "site-packages"))
import deeplib

def build():
    torch.manual_seed(0)
    return deeplib.Deep()  # the user's own line
"""

FX_NAME = re.compile(r"\bbody_\d+\b|(?<![\w.])_\d+\b")
"""fx's node names: ``body_3`` for ``body.3``, ``_36`` for a top-level ``nn.Sequential``'s 36."""


def _findings(run_cli, target: str, output_format: str) -> list[str]:
    result = run_cli("check", target, "--output-format", output_format)
    assert result.exit_code == 1, result.output
    return result.stdout.splitlines()


@pytest.mark.parametrize("output_format", ["text", "concise", "github"])
def test_nested_modules_show_as_dotted_paths_never_as_fx_names(run_cli, model_file, output_format):
    path = model_file(DEEP_SIGMOID_NET)
    lines = [line for line in _findings(run_cli, f"{path}:build", output_format) if "IL101" in line]
    assert lines and all("`body." in line and not FX_NAME.search(line) for line in lines), lines


def test_a_top_level_sequential_layer_is_quoted_with_its_kind(run_cli, model_file):
    """``2`` alone reads like a count: it shows as ``linear `2``` (what it is and its path)."""
    path = model_file(TOP_LEVEL_SEQUENTIAL)
    text = "\n".join(_findings(run_cli, f"{path}:build", "text"))
    assert re.search(r"\((error|warning)\) at (linear|sigmoid) `\d+`: ", text), text
    assert not re.search(r"\[\d+\]", text) and not FX_NAME.search(text), text


def test_json_keeps_fx_node_names_apart_from_module_paths(run_cli, model_file):
    path = model_file(DEEP_SIGMOID_NET)
    (report,) = json.loads("\n".join(_findings(run_cli, f"{path}:build", "json")))["reports"]
    finding = next(f for f in report["findings"] if f["code"] == "IL101")
    assert re.fullmatch(r"body_\d+", finding["node"]) and finding["module"] == finding["node"].replace("_", ".")
    assert not FX_NAME.search(finding["message"])


def test_concise_shows_severity_and_module(run_cli, model_file):
    path = model_file(DEEP_SIGMOID_NET)
    lines = _findings(run_cli, f"{path}:build", "concise")
    assert lines and all(re.search(r": IL\d{3} (error|warning|info) at \w+ `[\w.]+`: ", line) for line in lines), lines
    assert len(set(lines)) == len(lines)


def test_a_library_line_follows_the_users_own_line(run_cli, model_file, tmp_path):
    (tmp_path / "site-packages").mkdir()
    model_file(LIBRARY, "site-packages/deeplib.py")
    path = model_file(USES_LIBRARY)
    own_line = USES_LIBRARY.splitlines().index("    return deeplib.Deep()  # the user's own line") + 1
    body_line = LIBRARY.splitlines().index("        return self.body(x)") + 1
    text = "\n".join(_findings(run_cli, f"{path}:build", "text"))
    expected = f"model.py:{own_line} (via site-packages/deeplib.py:{body_line}): IL101"
    assert expected in text, text
    (report,) = json.loads("\n".join(_findings(run_cli, f"{path}:build", "json")))["reports"]
    location = report["findings"][0]["location"]
    assert (location["file"], location["line"]) == (str(path), own_line)
    assert location["via"]["file"].endswith("site-packages/deeplib.py") and location["via"]["line"] == body_line


@pytest.mark.parametrize("extra, status, reason", [
    ((), 1, "findings at or above warning"),
    (("--exit-zero",), 0, "--exit-zero"),
    (("--select", "IL3"), 0, "no finding at or above warning"),
])
def test_a_report_written_to_a_file_is_summed_up_on_stderr(run_cli, model_file, tmp_path, extra, status, reason):
    path = model_file(DEEP_SIGMOID_NET)
    report = tmp_path / "report.json"
    result = run_cli("check", f"{path}:build", "--output-format", "json", "-o", str(report), *extra)
    assert result.exit_code == status and result.stdout == ""
    findings = json.loads(report.read_text())["reports"][0]["findings"]
    by_severity = [(sum(f["severity"] == level for f in findings), level) for level in ("error", "warning", "info")]
    counts = f" ({', '.join(f'{count} {level}' for count, level in by_severity if count)})" if findings else ""
    assert result.stderr == (f"initlint: wrote {report}: {len(findings)} finding(s){counts} in 1 target; "
                             f"exit {status}: {reason}\n")


def test_configured_targets_are_named_relative_to_the_working_folder(run_cli, model_file, tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    model_file(DEEP_SIGMOID_NET, "models/net.py")
    (tmp_path / "pyproject.toml").write_text('[tool.initlint]\ntargets = ["models/net.py:build"]\n')
    monkeypatch.chdir(tmp_path)
    result = run_cli("check")
    assert result.exit_code == 1
    *findings, summary = [line for line in result.stdout.splitlines() if not line.startswith("  ")]
    assert summary.startswith("models/net.py:build: ")
    assert findings and all(line.startswith("models/net.py:") for line in findings), findings


def test_a_per_module_ignores_glob_that_matches_no_module_is_warned_about(run_cli, model_file, tmp_path, monkeypatch):
    model_file(DEEP_SIGMOID_NET, "net.py")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.initlint]\ntargets = ["net.py:build"]\nper-module-ignores = {"body.*" = ["IL101"], "haed" = ["IL501"]}\n')
    monkeypatch.chdir(tmp_path)
    result = run_cli("check")
    assert result.exit_code == 1  # IL501 is still reported: "haed" ignored nothing
    assert "IL501" in result.stdout and "IL101" not in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "per-module-ignores 'haed' matches no module" in warnings[0], result.stderr


def test_no_numpy_warning_when_numpy_is_absent(tmp_path):
    """numpy is optional; torch without it warns "Failed to initialize NumPy" on import."""
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "numpy.py").write_text('raise ModuleNotFoundError("No module named \'numpy\'", name="numpy")\n')
    environment = {**os.environ, "PYTHONPATH": str(hidden)}
    broken = str(Path(__file__).resolve().parent.parent / "examples" / "deep_sigmoid_mlp.py")
    torch_alone = subprocess.run([sys.executable, "-c", "import torch"], env=environment,
                                 capture_output=True, text=True)
    assert "Failed to initialize NumPy" in torch_alone.stderr  # what would show without the filter
    result = subprocess.run([sys.executable, "-m", "initlint", "check", f"{broken}:build"], env=environment,
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1 and "IL101" in result.stdout
    assert result.stderr == "", result.stderr

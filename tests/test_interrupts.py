"""SIGINT and SIGTERM, sent by a real ``kill`` to a real ``initlint`` process, leave no debris:
the CLI exits 2 with one message and no temporary file or folder stays behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIG_MODEL = """
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(4096, 4096), nn.Tanh())], nn.Linear(4096, 8))
"""
"""256 MB of weights: writing them takes long enough to be interrupted half-way."""

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _initlint(*args: str, cwd: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "initlint", *args]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _signal_when(process: subprocess.Popen, ready, sent: signal.Signals, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            process.send_signal(sent)
            return
        time.sleep(0.001)
    pytest.fail(f"the moment to interrupt never came (exit {process.poll()})")


def _assert_clean_interruption(process: subprocess.Popen, sent: signal.Signals) -> str:
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("initlint: error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert f"interrupted by {sent.name}" in errors[0] and "nothing was written" in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_while_fix_writes_its_folder_removes_the_partial_folder(tmp_path, sent):
    (tmp_path / "big.py").write_text(BIG_MODEL)
    process = _initlint("fix", "big.py:build", "-o", "fixed", cwd=tmp_path)
    staging = lambda: any(name.startswith(".fixed.") for name in os.listdir(tmp_path))  # noqa: E731
    _signal_when(process, staging, sent)
    _assert_clean_interruption(process, sent)
    assert sorted(os.listdir(tmp_path)) == ["big.py"]  # no partial files, no staging folder, no output


def test_sigterm_while_check_probes_exits_2_and_writes_no_report(tmp_path):
    (tmp_path / "big.py").write_text(BIG_MODEL + "\nopen('building', 'w').close()\n")
    process = _initlint("check", "big.py:build", "-o", "report.json", cwd=tmp_path)
    _signal_when(process, lambda: (tmp_path / "building").exists(), signal.SIGTERM)
    _assert_clean_interruption(process, signal.SIGTERM)
    assert sorted(os.listdir(tmp_path)) == ["big.py", "building"]

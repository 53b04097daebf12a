"""The README's install lines, run as a user would (with this checkout standing in for GIT_URL),
and the torch/torchvision pair they name importing together."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
GIT_INSTALL = re.compile(r'^python3 -m pip install "torch==([\d.]+)" "(initlint @ git\+GIT_URL@([0-9a-f]{40}))"$', re.M)


def readme_blocks(language: str) -> list[str]:
    """The README's fenced code blocks of ``language``."""
    return re.findall(rf"^```{language}\n(.*?)^```", README, re.S | re.M)


def pinned_commit() -> str:
    """The commit every install line and the pre-commit snippet pin (one and the same)."""
    commits = set(re.findall(r"(?:initlint @ git\+GIT_URL@|rev: )([0-9a-f]{40})", README))
    assert len(commits) == 1, commits
    return commits.pop()


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def require_history() -> None:
    shallow = _git("rev-parse", "--is-shallow-repository")
    if shallow.returncode or shallow.stdout.strip() == "true":
        pytest.skip("needs initlint's own git checkout with its history")


def test_no_install_line_names_a_package_that_is_not_published():
    commands = "\n".join(readme_blocks("bash") + readme_blocks("yaml"))
    for line in commands.splitlines():
        if "pip install" in line:
            words = shlex.split(line.split("pip install", 1)[1].split("&&")[0])
            assert "initlint" not in words, line  # PyPI has no such distribution


def test_the_torch_pin_is_the_one_ci_installs():
    ci = (ROOT / ".ci" / "run").read_text()
    pins = set(re.findall(r'"torch==([\d.]+)"', README + ci))
    assert len(pins) == 1, pins
    extra = (ROOT / "pyproject.toml").read_text()
    (torchvision,) = re.findall(r'"torchvision==([\d.]+)"', extra)
    assert f"torchvision {torchvision}" in README


def test_the_installed_torch_and_torchvision_run_torchvisions_own_operators():
    """A CPU-only torch beside a CUDA torchvision fails here ("operator torchvision::nms does
    not exist"); nothing in the suite fakes the operator."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.9], [2.0, 2.0, 3.0, 3.0]])
    kept = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert kept.tolist() == [0, 2]  # the second box overlaps the first (IoU 0.9) and scores lower


def test_the_git_install_line_installs_the_pinned_commit(tmp_path):
    """The README's `pip install "initlint @ git+GIT_URL@<hash>"`, with this checkout as GIT_URL
    (``file://localhost/...``: older pip rejects a URL without a host). Dependencies (torch)
    come from this environment; pip fetches the build backend (setuptools) as for any user."""
    require_history()
    (torch_pin, requirement, commit), = GIT_INSTALL.findall(README)
    assert commit == pinned_commit() and _git("cat-file", "-e", f"{commit}^{{commit}}").returncode == 0
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), requirement.replace("GIT_URL", f"file://localhost{ROOT.as_posix()}")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr
    assert (target / "initlint" / "rules" / "variance_drift.py").is_file() and not (target / "rules").exists()
    run = subprocess.run([sys.executable, "-c", "import initlint.cli, initlint.rules; print(initlint.__file__)"],
                         env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.startswith(str(target)), run.stderr

"""The published pre-commit hook, run by the real pre-commit tool in a throwaway repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

MODEL = """
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    layers = []
    for _ in range(12):
        linear = nn.Linear(32, 32)
        {init}
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers)
"""
HEALTHY = 'nn.init.kaiming_normal_(linear.weight, nonlinearity="relu"); nn.init.zeros_(linear.bias)'


def _git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          cwd=cwd, capture_output=True, text=True)


def _head() -> str:
    head = _git("rev-parse", "HEAD", cwd=ROOT)
    if head.returncode or _git("ls-files", "--error-unmatch", ".pre-commit-hooks.yaml", cwd=ROOT).returncode:
        pytest.skip("needs initlint's own git checkout with .pre-commit-hooks.yaml committed")
    return head.stdout.strip()


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A function that makes a git repository using initlint through ``config`` (the text of
    its .pre-commit-config.yaml)."""
    monkeypatch.setenv("PRE_COMMIT_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    def make(config: str) -> Path:
        repo = tmp_path / "project"
        repo.mkdir()
        _git("init", "-q", cwd=repo)
        (repo / "pyproject.toml").write_text('[tool.initlint]\ntargets = ["model.py:build"]\n')
        (repo / ".pre-commit-config.yaml").write_text(config)
        return repo

    return make


@pytest.fixture
def repository(project):
    return project(textwrap.dedent(f"""
        repos:
          - repo: {ROOT}
            rev: {_head()}
            hooks:
              - id: initlint
    """))


def _commit_with_model(repo: Path, init: str) -> subprocess.CompletedProcess:
    (repo / "model.py").write_text(textwrap.dedent(MODEL).format(init=init))
    _git("add", "-A", cwd=repo)
    return _git("commit", "-q", "-m", "model", cwd=repo)


def test_broken_model_blocks_the_commit_and_a_healthy_one_passes(repository):
    pre_commit = [sys.executable, "-m", "pre_commit"]
    assert shutil.which("git")
    subprocess.run([*pre_commit, "install"], cwd=repository, check=True, capture_output=True)

    blocked = _commit_with_model(repository, "pass  # PyTorch's default init")
    assert blocked.returncode != 0
    assert "IL101 variance-drift" in blocked.stdout + blocked.stderr
    assert _git("rev-parse", "HEAD", cwd=repository).returncode != 0  # nothing was committed
    run_all = subprocess.run([*pre_commit, "run", "--all-files"], cwd=repository, capture_output=True, text=True)
    assert run_all.returncode == 1 and "IL101 variance-drift" in run_all.stdout

    passed = _commit_with_model(repository, HEALTHY)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    run = subprocess.run([*pre_commit, "run", "--all-files"], cwd=repository, capture_output=True, text=True)
    assert run.returncode == 0 and "initlint" in run.stdout


def _readme_config(repo_line: str) -> str:
    """The README's .pre-commit-config.yaml whose ``repo:`` is ``repo_line``."""
    from test_readme_install import readme_blocks

    (block,) = [b for b in readme_blocks("yaml") if f"  - repo: {repo_line}\n" in b]
    return block


def _blocks_a_broken_model(repo: Path) -> None:
    (repo / "model.py").write_text(textwrap.dedent(MODEL).format(init="pass  # PyTorch's default init"))
    _git("add", "-A", cwd=repo)
    run = subprocess.run([sys.executable, "-m", "pre_commit", "run", "--all-files"], cwd=repo,
                         capture_output=True, text=True)
    assert run.returncode == 1 and "IL101 variance-drift" in run.stdout, run.stdout + run.stderr


def test_the_readmes_local_hook_is_the_published_hook_written_out(project):
    yaml = pytest.importorskip("yaml")
    config = _readme_config("local")
    (local,) = yaml.safe_load(config)["repos"][0]["hooks"]
    published = next(h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text()) if h["id"] == "initlint")
    assert {k: v for k, v in published.items() if k not in ("name", "description")} == \
        {k: v for k, v in local.items() if k != "name"}
    _blocks_a_broken_model(project(config))


def test_the_readmes_hook_at_its_pinned_commit_works(project):
    """``repo: GIT_URL`` at the README's ``rev``, with this checkout standing in for GIT_URL."""
    from test_readme_install import pinned_commit, require_history

    _head()
    require_history()
    config = _readme_config("GIT_URL")
    assert f"rev: {pinned_commit()}" in config
    _blocks_a_broken_model(project(config.replace("GIT_URL", str(ROOT))))

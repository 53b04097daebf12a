"""Shared fixtures: run the CLI in-process and write throwaway model files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from initlint.cli import main


@pytest.fixture
def run_cli():
    """Invoke ``initlint ARGS...`` in-process; returns click's Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, list(args), catch_exceptions=False)

    return run


@pytest.fixture
def model_file(tmp_path: Path):
    """Write a Python file in a fresh folder and return its path."""

    def write(source: str, name: str = "model.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write

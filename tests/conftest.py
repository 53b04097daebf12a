"""Shared fixtures: run the CLI in-process and write throwaway model files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from initlint.cli import main

DEEP_SIGMOID_NET = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(*[m for _ in range(12) for m in (nn.Linear(32, 32), nn.Sigmoid())])
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.body(x))

def build():
    torch.manual_seed(0)
    return Net()
"""
"""A model file with a broken init (default-init sigmoid stack): IL101, IL105 (its kernel
collapses: every output is the sigmoids' shared offset) and IL501 fire on it."""


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

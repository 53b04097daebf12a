"""Hostile and careless input: nothing of the user's is lost, nothing from a name runs.

Each case goes through the CLI as a user would type it, and asserts the exit status, one
``initlint: error:`` line that says what and how, no traceback, and that no file changed.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

SEQUENTIAL_MLP = """
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 2))
"""


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: what a run must leave as it found it."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused(result, *phrases: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    errors = [line for line in result.stderr.splitlines() if line.startswith("initlint: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in errors[0], (phrase, errors[0])


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's project folder, the working folder of the run: a model, notes and sources."""
    (tmp_path / "m.py").write_text(SEQUENTIAL_MLP)
    (tmp_path / "notes.txt").write_text("my notes\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('train')\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("output", [".", "..", "src", "notes.txt", "./src/..", "linked"])
def test_force_never_replaces_a_folder_that_fix_did_not_write(run_cli, project, output):
    (project / "linked").symlink_to(project / "src")
    before = snapshot(project.parent)
    result = run_cli("fix", "m.py:build", "-o", output, "--force")
    assert_refused(result, repr(output))
    assert snapshot(project.parent) == before


def test_force_replaces_its_own_output_but_not_once_the_user_added_a_file(run_cli, project):
    assert run_cli("fix", "m.py:build", "-o", "fixed").exit_code == 0
    assert run_cli("check", "fixed").exit_code in (0, 1)  # leaves model's bytecode behind
    assert run_cli("fix", "m.py:build", "-o", "fixed", "--force").exit_code == 0
    assert json.loads((project / "fixed" / "renorm.json").read_text())["initlint"]

    (project / "fixed" / "my_notes.txt").write_text("mine\n")
    before = snapshot(project)
    assert_refused(run_cli("fix", "m.py:build", "-o", "fixed", "--force"), "not written by initlint")
    assert snapshot(project) == before
    assert not [p for p in project.iterdir() if p.name.startswith(".fixed")]  # no staging debris


def test_force_refuses_a_plan_file_without_initlints_marker(run_cli, project):
    (project / "look_alike").mkdir()
    (project / "look_alike" / "renorm.json").write_text("{}")
    assert_refused(run_cli("fix", "m.py:build", "-o", "look_alike", "--force"), "not written by initlint")
    assert (project / "look_alike" / "renorm.json").read_text() == "{}"


def test_force_fills_an_empty_folder(run_cli, project):
    (project / "empty").mkdir()
    assert run_cli("fix", "m.py:build", "-o", "empty", "--force").exit_code == 0
    assert (project / "empty" / "model.py").is_file()


MARKER = "PWNED"
PAYLOAD_KEY = f'a" if getattr(__import__("os"),"system")("touch {MARKER}") else "a'
MODULE_DICT_MODEL = f"""
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleDict({{{PAYLOAD_KEY!r}: nn.Linear(8, 8), 'quote"key': nn.Linear(8, 8)}})
        self.act = nn.Sigmoid()

    def forward(self, x):
        for block in self.blocks.values():
            x = self.act(block(x))
        return x

def build():
    torch.manual_seed(0)
    return Net()
"""


def _assert_nothing_ran(root: Path) -> None:
    assert not list(root.rglob(MARKER)), "a payload from a name ran"


def test_a_hostile_module_name_is_neither_run_nor_pasted_into_generated_code(run_cli, project):
    (project / "hostile.py").write_text(MODULE_DICT_MODEL)
    checked = run_cli("check", "hostile.py:build", "--output-format", "json")
    modules = {node["module"] for node in json.loads(checked.stdout)["reports"][0]["nodes"]}
    assert {"blocks.quote\"key", f"blocks.{PAYLOAD_KEY}"} <= modules  # reported by their real paths
    result = run_cli("fix", "hostile.py:build", "-o", "fixed")
    assert result.exit_code == 0, result.output
    tree = ast.parse((project / "fixed" / "model.py").read_text())
    assert "__import__" not in {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.Constant) and MARKER in str(node.value)]
    assert run_cli("check", "fixed").exit_code in (0, 1)  # imports, builds and runs the fixed model
    _assert_nothing_ran(project)


@pytest.mark.parametrize("folder", [
    f'x"""; import os; os.system("touch {MARKER}") #',
    "back\\slash\\N\\u12",
    "it's",
])
def test_a_hostile_path_is_escaped_in_generated_code(run_cli, project, folder):
    (project / folder).mkdir()
    (project / folder / "m.py").write_text(SEQUENTIAL_MLP)
    result = run_cli("fix", f"{folder}/m.py:build", "-o", "fixed")
    assert result.exit_code == 0, result.output
    assert run_cli("check", "fixed").exit_code in (0, 1)
    docstring = ast.get_docstring(ast.parse((project / "fixed" / "model.py").read_text()))
    assert folder in docstring
    _assert_nothing_ran(project)

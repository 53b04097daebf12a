"""Bad input, case by case: exit 2, a message that says what is wrong and how to mend it, no
traceback, and nothing written or modified in the project folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

MODELS = '''
import torch
from torch import nn

def ok():
    return nn.Linear(4, 2)

def raises():
    raise ValueError("boom")

def not_a_module():
    return 42

def needs_arguments(width):
    return nn.Linear(width, 2)

def interrupted():
    raise KeyboardInterrupt

not_callable = 3
'''

# (arguments, what the message must say, how to mend it)
CASES = [
    (["check", "missing.py:build"], "no such file or folder: 'missing.py'", "check the path"),
    (["check", "no_such_dir"], "no such file or folder: 'no_such_dir'", "path/to/file.py:factory"),
    (["check", "no_such_dir/"], "no such file or folder: 'no_such_dir/'", "path/to/file.py:factory"),
    (["check", "./existing_folder:build"], "is a folder, not a model file", "path/to/file.py:factory"),
    (["check", "syntax.py:build"], "syntax error", "fix the file"),
    (["check", "empty.py:build"], "has no attribute 'build'", "write a function that returns the model"),
    (["check", "models.py:nothere"], "has no attribute 'nothere'", "Callables defined there: interrupted"),
    (["check", "models.py:not_callable"], "not a callable", "name a function"),
    (["check", "models.py:raises"], "raised ValueError: boom", "without errors"),
    (["check", "models.py:not_a_module"], "returned int 42, not a torch.nn.Module", "return the model"),
    (["check", "models.py:needs_arguments"], "cannot be called without arguments", "give every parameter a default"),
    (["check", "no_such_package_xyz.models:build"], "cannot import module", "install the package"),
    (["check", "imports_unknown.py:build"], "No module named 'no_such_package_xyz'", "import cleanly"),
    (["check", "models.py"], "'models.py' is a file", "after a colon: 'models.py:build'"),
    (["check", "models.py:"], "is not of the form", "after a colon"),
    (["check", "models.py:ok", "--input-shape", "8,5"], "shape (8, 5) failed", "--input-shape"),
    (["check", "models.py:ok", "--input-shape", "100000000000,4"], "would need more than", "smaller batch"),
    (["check", "models.py:ok", "--input-shape", "8,x"], "not a comma-separated list", "--input-shape 8,3,224,224"),
    (["check", "models.py:ok", "--device", "tpu"], "'tpu' is not one of", "'cpu'"),
    (["check", "models.py:ok", "--select", "IL999"], "unknown rule code 'IL999'", "Known rules"),
    (["check", "models.py:ok", "-o", "no_folder/report.txt"], "does not exist", "cannot write"),
    (["check", "models.py:ok", "-o", "existing.txt"], "already exists", "--force"),
    (["fix", "models.py:ok", "-o", "existing_folder"], "already exists", "--force"),
    (["fix", "models.py:ok", "-o", "existing.txt/fixed"], "'existing.txt' is not a folder", "cannot write"),
    # refused before the model is built: the factory's error would come first otherwise
    (["fix", "models.py:raises", "-o", "no_folder/fixed"], "does not exist", "create it first"),
    (["check", "models.py:raises", "-o", "no_folder/report.txt"], "does not exist", "create it first"),
    (["check", "models.py:interrupted", "-o", "report.txt"], "raised KeyboardInterrupt at", "must return the model"),
]
if not torch.cuda.is_available():
    CASES.append((["check", "models.py:ok", "--device", "cuda"], "has none", "--device cpu"))


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with model files, an existing output file and folder; the cwd for the case."""
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "syntax.py").write_text("def build(:\n")
    (tmp_path / "empty.py").write_text("")
    (tmp_path / "imports_unknown.py").write_text("import no_such_package_xyz\n")
    (tmp_path / "existing.txt").write_text("keep me\n")
    (tmp_path / "existing_folder").mkdir()
    (tmp_path / "existing_folder" / "model.py").write_text("# keep me\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.read_bytes() if path.is_file() else b"")
        for path in folder.rglob("*") if "__pycache__" not in path.parts
    }


@pytest.mark.parametrize("args, what, how", CASES, ids=lambda value: " ".join(value) if isinstance(value, list) else "")
def test_bad_input_exits_2_with_a_message_and_changes_nothing(run_cli, project, args, what, how):
    before = snapshot(project)
    result = run_cli(*args)
    output = result.stdout + result.stderr
    assert result.exit_code == 2, output
    assert what in output and how in output, output
    assert "Traceback" not in output
    assert snapshot(project) == before

"""Hostile and careless input: nothing of the user's is lost, nothing from a name runs.

Each case goes through the CLI as a user would type it, and asserts the exit status, one
``initlint: error:`` line that says what and how, no traceback, and that no file changed.
"""

from __future__ import annotations

import ast
import json
import os
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


# --- The attack suite: each case is bad input that once passed silently, exited with the model's
# own status, or crashed with "unexpected ...". Now: exit 2, one message naming what and how,
# nothing written. (files to add to the project, arguments, phrases the message must hold)
LONG = "n" * 300
EXITS_AT_IMPORT = "import sys\nsys.exit(0)\n"
SCRIPT_WITHOUT_GUARD = SEQUENTIAL_MLP + "\ndef main():\n    return 0\n\nimport sys\nsys.exit(main())\n"
EXITING = SEQUENTIAL_MLP + '''
def exits_1():
    raise SystemExit(1)

def exits_3():
    import sys
    sys.exit(3)

def interrupts():
    raise KeyboardInterrupt

class Quits(nn.Linear):
    def forward(self, x):
        raise SystemExit(0)

def quits_in_forward():
    return Quits(8, 2)
'''


def _at(name: str, source: str, statement: str) -> str:
    """``name:line`` of the first line of ``source`` that holds ``statement``: where it raised."""
    return f"{name}:{next(i for i, line in enumerate(source.splitlines(), 1) if statement in line)}"


def _config(body: str) -> dict[str, str]:
    return {"pyproject.toml": f"[tool.initlint]\n{body}\n"}


ATTACKS = [
    ({"exits.py": EXITS_AT_IMPORT}, ["check", "exits.py:build"], ["tried to exit", "SystemExit(0) at", _at("exits.py", EXITS_AT_IMPORT, "sys.exit"), "__main__"]),
    ({"script.py": SCRIPT_WITHOUT_GUARD}, ["check", "script.py:build"], ["tried to exit", _at("script.py", SCRIPT_WITHOUT_GUARD, "sys.exit"), "__main__"]),
    ({"exiting.py": EXITING}, ["check", "exiting.py:exits_1"], ["SystemExit(1) at", _at("exiting.py", EXITING, "SystemExit(1)"), "must return the model"]),
    ({"exiting.py": EXITING}, ["check", "exiting.py:exits_3"], ["SystemExit(3) at", _at("exiting.py", EXITING, "sys.exit(3)"), "must return the model"]),
    ({"exiting.py": EXITING}, ["fix", "exiting.py:exits_3", "-o", "out"], ["SystemExit(3)", "must return the model"]),
    ({"exiting.py": EXITING}, ["check", "exiting.py:interrupts"], ["KeyboardInterrupt at", _at("exiting.py", EXITING, "raise KeyboardInterrupt")]),
    ({"exiting.py": EXITING}, ["check", "exiting.py:quits_in_forward"], ["traced or probed", _at("exiting.py", EXITING, "SystemExit(0)"), "forward"]),
    ({}, ["check", "m.py:build", "--select", ""], ["--select", "selects no rule", "ALL"]),
    ({}, ["check", "m.py:build", "--select", ",", "--ignore", "IL1"], ["--select", "selects no rule"]),
    ({}, ["check", "m.py:build", "--select", "IL101", "--ignore", "IL1"], ["runs no rule", "--select ALL"]),
    ({}, ["check", "m.py:build", "--seed", str(2**70)], ["--seed", "is not a seed", "from 0 to"]),
    ({}, ["check", "m.py:build", "--seed", "-1"], ["--seed", "from 0 to"]),
    ({}, ["fix", "m.py:build", "-o", "out", "--seed", str(2**64)], ["--seed", "from 0 to"]),
    (_config('select = [""]'), ["check", "m.py:build"], ["pyproject.toml", "select", "selects no rule"]),
    (_config("select = []"), ["check", "m.py:build"], ["pyproject.toml", "select", "selects no rule"]),
    (_config("[tool.initlint.rules.IL101]\nband = nan"), ["check", "m.py:build"], ["pyproject.toml", "rules.IL101.band", "finite number"]),
    (_config("[tool.initlint.rules.IL201]\nmax_fraction = -0.5"), ["check", "m.py:build"], ["pyproject.toml", "rules.IL201.max_fraction", ">= 0"]),
    (_config("[tool.initlint.rules.IL101]\nband = 0.5"), ["check", "m.py:build"], ["rules.IL101.band", "ratio >= 1"]),
    (_config("[tool.initlint.rules.IL101]\nband = inf"), ["check", "m.py:build"], ["rules.IL101.band", "finite"]),
    (_config("[tool.initlint.rules.IL999]\nband = 2.0"), ["check", "m.py:build"], ["rules.IL999", "unknown rule code 'IL999'"]),
    (_config('per-module-ignores = {"head.*" = ["IL999"]}'), ["check", "m.py:build"], ["per-module-ignores", "'IL999'", "Known rules"]),
    (_config('ignore = ["IL9"]'), ["check", "m.py:build"], ["pyproject.toml", "ignore", "unknown rule code 'IL9'"]),
    (_config(f"seed = {2**62 * 4}"), ["check", "m.py:build"], ["pyproject.toml", "seed", "from 0 to"]),
    (_config('leaf-modules = ["os.path"]'), ["check", "m.py:build"], ["leaf-modules", "module 'posixpath'", "nn.Module classes"]),
    (_config('wrap-functions = ["torch.nn.Linear"]'), ["check", "m.py:build"], ["wrap-functions", "functions"]),
    ({"pyproject.toml": "tool = 3\n"}, ["check", "m.py:build"], ["pyproject.toml", "tool must be a table"]),
    ({"pyproject.toml": "[tool]\ninitlint = 5\n"}, ["check", "m.py:build"], ["pyproject.toml", "tool.initlint must be a table"]),
    ({"pyproject.toml": b"[tool.initlint]\nselect = [\"\xff\"]\n"}, ["check", "m.py:build"], ["pyproject.toml", "not UTF-8", "save it as UTF-8"]),
    ({}, ["check", "m.py:build", "-o", f"{LONG}.json"], ["the output file", f"{len(LONG) + 5} bytes", "shorter name"]),
    ({}, ["check", "m.py:build", "--plot", f"{LONG}.png"], ["the output file", "shorter name"]),
    ({}, ["fix", "m.py:build", "-o", LONG], ["the output folder", f"{len(LONG)} bytes", "shorter name"]),
    ({}, ["check", f"{LONG}.py:build"], ["the model file", "shorter name"]),
    ({}, ["check", "m.py:build", "--config", f"{LONG}.toml"], ["the config file", "shorter name"]),
    ({}, ["gain", "tanh", "--depth", "1000", "--width", "4096"], ["depth 1000 and width 4096", "GiB", "smaller --depth or --width"]),
]


def _add(project: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        (project / name).write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.mark.parametrize("files, args, phrases", ATTACKS, ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else "")
def test_attack_exits_2_with_one_message_and_changes_nothing(run_cli, project, files, args, phrases):
    _add(project, files)
    before = snapshot(project)
    assert_refused(run_cli(*args), *phrases)
    assert snapshot(project) == before


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_fix_into_a_read_only_folder_says_so(run_cli, project):
    (project / "locked").mkdir(mode=0o555)
    before = snapshot(project)
    assert_refused(run_cli("fix", "m.py:build", "-o", "locked/out"), "cannot write", "permissions")
    assert snapshot(project) == before


# --- The same through the Python API: InitlintError (never TypeError or AttributeError), and
# the model untouched.
def _linear() -> "torch.nn.Module":
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Sigmoid(), torch.nn.Linear(8, 2))


API_ATTACKS = [
    ((None,), {}, ["takes a torch.nn.Module, not NoneType"]),
    ((_linear,), {}, ["not function", "call it to build the model first"]),
    ((), {"input_shapes": [(-8, 8)]}, ["input_shapes", "positive integers"]),
    ((), {"input_shapes": "8,8"}, ["input_shapes", "list of shapes"]),
    ((), {"thresholds": {"IL101": {"band": "wide"}}}, ["thresholds", "'wide' is not a threshold of IL101"]),
    ((), {"thresholds": {"IL101": {"band": float("nan")}}}, ["thresholds", "finite"]),
    ((), {"thresholds": {"IL101": 8.0}}, ["thresholds", "table of rule tables"]),
    ((), {"seed": 2**70}, ["seed", "from 0 to"]),
    ((), {"seed": 1.5}, ["seed", "is not a seed"]),
    ((), {"batch_size": 0}, ["batch_size", "positive integer"]),
    ((), {"select": [""]}, ["select", "selects no rule"]),
    ((), {"select": 101}, ["select", "list of rule codes"]),
    ((), {"per_module_ignores": {"*": ["IL999"]}}, ["per_module_ignores", "'IL999'"]),
    ((), {"leaf_modules": ["torch.nn.Linear"]}, ["leaf_modules", "nn.Module classes"]),
    ((), {"no_such_option": 1}, ["no_such_option", "CheckOptions"]),
]


@pytest.mark.parametrize("function", ["check", "fix"])
@pytest.mark.parametrize("model, options, phrases", API_ATTACKS, ids=lambda v: str(v)[:40])
def test_api_attack_raises_initlint_error_and_leaves_the_model(function, model, options, phrases):
    import torch

    import initlint

    target = model[0] if model else _linear()
    before = {k: v.clone() for k, v in target.state_dict().items()} if isinstance(target, torch.nn.Module) else {}
    with pytest.raises(initlint.InitlintError) as raised:
        getattr(initlint, function)(target, **options)
    for phrase in phrases:
        assert phrase in str(raised.value), (phrase, str(raised.value))
    if before:
        assert all(torch.equal(target.state_dict()[k], v) for k, v in before.items())


def test_a_single_code_string_is_a_code_not_its_letters():
    import initlint

    report = initlint.check(_linear(), select="IL101")
    assert report.to_dict()["findings"] == [] or {f.code for f in report.findings} <= {"IL101"}
    with pytest.raises(initlint.InitlintError, match="unknown rule code 'IL999'"):
        initlint.check(_linear(), select="IL999")


def test_a_folder_the_os_refuses_to_write_gives_the_reason_and_the_mend(run_cli, project, monkeypatch):
    """The read-only case for any user, root included: the OS's refusal is simulated."""
    import errno
    import tempfile

    def refuse(*args: object, **kwargs: object) -> str:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    before = snapshot(project)
    assert_refused(run_cli("fix", "m.py:build", "-o", "out"), "cannot write 'out'", "Permission denied",
                   "choose a folder you can write to")
    assert snapshot(project) == before

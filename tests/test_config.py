"""[tool.initlint] in pyproject.toml: targets, selection, thresholds, errors that name the key."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import DEEP_SIGMOID_NET


@pytest.fixture
def project(tmp_path, model_file, monkeypatch):
    """A project folder with models/net.py and a pyproject.toml whose [tool.initlint] is given."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.py").write_text(DEEP_SIGMOID_NET)
    (tmp_path / "src").mkdir()
    monkeypatch.chdir(tmp_path / "src")  # run from a subfolder: the config is found walking up

    def write(table: str):
        (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n\n" + textwrap.dedent(table))
        return tmp_path / "pyproject.toml"

    return write


def codes(result):
    return [f["code"] for r in json.loads(result.stdout)["reports"] for f in r["findings"]]


def test_configured_targets_relative_to_the_config(run_cli, project):
    project('[tool.initlint]\ntargets = ["models/net.py:build"]\noutput-format = "json"\n')
    result = run_cli("check")
    assert result.exit_code == 1
    assert {"IL101", "IL501"} <= set(codes(result))


def test_ignore_silences_a_rule(run_cli, project):
    project('[tool.initlint]\ntargets = ["models/net.py:build"]\noutput-format = "json"\nignore = ["IL101"]\n')
    assert "IL101" not in codes(run_cli("check")) and "IL501" in codes(run_cli("check"))


def test_thresholds_per_rule_and_per_module_ignores(run_cli, project):
    project("""
        [tool.initlint]
        targets = [{target = "models/net.py:build", input-shapes = [[16, 32]]}]
        output-format = "json"
        per-module-ignores = {"body.*" = ["IL5"]}

        [tool.initlint.rules.IL101]
        band = 1e12
        error_band = 1e13

        [tool.initlint.rules.IL105]
        collapse_cos = 1.0
    """)
    result = run_cli("check")
    assert codes(result) == [] and result.exit_code == 0
    assert json.loads(result.stdout)["reports"][0]["inputs"][0]["shape"] == [16, 32]


def test_command_line_overrides_the_file(run_cli, project):
    project('[tool.initlint]\ntargets = ["models/net.py:build"]\nselect = ["IL3"]\nfail-level = "error"\n')
    assert run_cli("check").exit_code == 0  # IL3 finds nothing here
    assert run_cli("check", "--select", "IL1", "--fail-level", "warning").exit_code == 1


def test_explicit_config_path(run_cli, project, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text(f'[tool.initlint]\ntargets = ["{tmp_path}/models/net.py:build"]\nselect = ["IL3"]\n')
    project("")
    assert run_cli("check", "--config", str(other)).exit_code == 0


@pytest.mark.parametrize(
    "table, message",
    [
        ('[tool.initlint]\nignroe = ["IL101"]\n', "ignroe: unknown key"),
        ('[tool.initlint]\nfail-level = "fatal"\n', "fail-level: 'fatal' is not one of"),
        ('[tool.initlint]\nselect = "IL101"\n', "select: must be a list of strings"),
        ('[tool.initlint]\nseed = "one"\n', "seed: 'one' is not a seed"),
        ('[tool.initlint]\ntargets = [{target = "m.py:b", shapes = [[1]]}]\n', "targets[0]: unknown key(s) shapes"),
        ('[tool.initlint.rules.IL101]\nband = "wide"\n', "rules.IL101.band: 'wide' is not a threshold of IL101"),
        ('[tool.initlint]\nleaf-modules = ["no_such_mod.Block"]\n', "leaf-modules: cannot import"),
        ("[tool.initlint\n", "fix the TOML"),
        ('[tool.initlint]\nrequire-graph = "yes"\n', "require-graph: must be true or false"),
        ('[tool.initlint]\ntargets = [{target = "m.py:b", inputs = {ids = "8,x:int64"}}]\n', "targets[0].inputs: input 'ids'"),
        ('[tool.initlint]\ntargets = [{target = "m.py:b", inputs = {ids = "8,32:int8"}}]\n', "'int8' is not one of"),
    ],
)
def test_bad_config_exits_2_naming_key_and_file(run_cli, project, table, message):
    path = project(table)
    result = run_cli("check", "../models/net.py:build")  # imports resolve beside a target that loads
    assert result.exit_code == 2
    assert message in result.stderr and str(path) in result.stderr and "Traceback" not in result.stderr


def test_unknown_threshold_and_code_in_config(run_cli, project):
    project('[tool.initlint]\ntargets = ["models/net.py:build"]\n[tool.initlint.rules.IL101]\nwidth = 3\n')
    result = run_cli("check")
    assert result.exit_code == 2 and "rules.IL101.width: IL101 has no threshold 'width'" in result.stderr
    project('[tool.initlint]\ntargets = ["models/net.py:build"]\nselect = ["IL9"]\n')
    assert run_cli("check").exit_code == 2


def test_no_targets_anywhere(run_cli, project):
    project("")
    result = run_cli("check")
    assert result.exit_code == 2 and "no TARGET given" in result.stderr


def test_fix_reads_probe_settings_from_the_config(run_cli, project, tmp_path):
    """The configured seed picks the probe batch of `fix` too, and --seed overrides it."""
    def constants(*args: str) -> list:
        out = tmp_path / f"fixed{len(list(tmp_path.iterdir()))}"
        assert run_cli("fix", "../models/net.py:build", "-o", str(out), *args).exit_code == 0
        return [site["scale"] for site in json.loads((out / "renorm.json").read_text())["constants"]]

    project("[tool.initlint]\nseed = 7\n")
    from_config = constants()
    assert from_config == constants("--seed", "7") != constants("--seed", "0")
    project('[tool.initlint]\ndevice = "tpu"\n')
    result = run_cli("fix", "../models/net.py:build", "-o", str(tmp_path / "never"))
    assert result.exit_code == 2 and "device" in result.stderr and not (tmp_path / "never").exists()

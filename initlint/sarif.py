"""SARIF 2.1.0, the format GitHub code scanning and editors' SARIF viewers read.

One run for one invocation: the driver lists every rule with its summary and documentation, and
each result points at the file and line where the flagged layer is called or defined (code
scanning shows only results with such a physical location) and names the module path as a
logical location. Paths inside the working folder are relative to ``%SRCROOT%``, the folder
initlint ran in, which in CI is the repository's root.
"""

from __future__ import annotations

import inspect
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from initlint import __version__
from initlint.report import person_message
from initlint.rule import Finding
from initlint.rules import ALL_RULES

if TYPE_CHECKING:
    from initlint.report import Report

SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SOURCE_ROOT = "%SRCROOT%"
_LEVELS = {"error": "error", "warning": "warning", "info": "note"}


def _rule_descriptor(rule: type) -> dict[str, Any]:
    documentation = inspect.getdoc(rule) or rule.summary()
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary()},
        "fullDescription": {"text": documentation},
        "help": {"text": f"{documentation}\n\nRun `initlint rule {rule.code}` for the defaults."},
        "defaultConfiguration": {"level": "warning"},
        "properties": {"thresholds": dict(rule.thresholds)},
    }


def _artifact_location(file: Path) -> dict[str, str]:
    """A valid URI (RFC 3986): spaces and other reserved characters of a relative path are
    percent-encoded, as ``as_uri`` does for an absolute one."""
    if file.is_absolute():
        return {"uri": file.as_uri()}
    return {"uri": urllib.parse.quote(file.as_posix()), "uriBaseId": SOURCE_ROOT}


def _location(finding: Finding) -> dict[str, Any]:
    module = finding.module or finding.node
    location: dict[str, Any] = {
        "logicalLocations": [{
            "name": module,  # the whole path: a bare "2" of an nn.Sequential reads like a count
            "fullyQualifiedName": module,
            "kind": "module" if finding.module else "function",
        }],
    }
    if finding.location is not None:
        location["physicalLocation"] = {
            "artifactLocation": _artifact_location(finding.location.display_path()),
            "region": {"startLine": finding.location.line},
        }
    return location


def _result(finding: Finding, target: str, rule_index: dict[str, int]) -> dict[str, Any]:
    return {
        "ruleId": finding.code,
        "ruleIndex": rule_index[finding.code],
        "level": _LEVELS[finding.severity],
        "message": {"text": person_message(finding)},
        "locations": [_location(finding)],
        "properties": {"target": target, "node": finding.node, "data": finding.data},
    }


def sarif_log(reports: list[Report]) -> dict[str, Any]:
    """The SARIF log of one initlint invocation as a JSON-ready dict."""
    rule_index = {rule.code: i for i, rule in enumerate(ALL_RULES)}
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "initlint",
                "version": __version__,
                "rules": [_rule_descriptor(rule) for rule in ALL_RULES],
            }},
            "originalUriBaseIds": {SOURCE_ROOT: {"uri": Path.cwd().as_uri() + "/"}},
            "invocations": [{"executionSuccessful": True}],
            "results": [
                _result(finding, report.target, rule_index)
                for report in reports for finding in report.findings
            ],
        }],
    }

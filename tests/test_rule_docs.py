"""`initlint rule`, and the README's rules table generated from the same registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from initlint.rules import ALL_RULES

from initlint.rule_docs import rules_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_rules_table_is_generated_from_the_registry():
    assert rules_table() in README.read_text(), "regenerate with initlint.rule_docs.rules_table()"


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_rule_prints_its_documentation(run_cli, rule):
    for key in (rule.code, rule.name, rule.code.lower()):
        result = run_cli("rule", key)
        assert result.exit_code == 0
        assert result.stdout.startswith(f"{rule.code} {rule.name}")
        for section in ("What it does", "Why is this bad?", "Example", "Fix"):
            assert section in result.stdout


def test_rule_all_lists_every_code_with_its_summary(run_cli):
    lines = run_cli("rule", "--all").stdout.splitlines()
    assert [line.split()[0] for line in lines] == [r.code for r in ALL_RULES]
    assert all(r.summary() in line for r, line in zip(ALL_RULES, lines))


@pytest.mark.parametrize("args", [("IL999",), (), ("IL101", "--all")])
def test_bad_rule_requests_exit_2(run_cli, args):
    result = run_cli("rule", *args)
    assert result.exit_code == 2 and "Traceback" not in result.output

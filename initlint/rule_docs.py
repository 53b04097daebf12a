"""Rule documentation for people: ``initlint rule CODE``, ``--all`` and the README's table."""

from __future__ import annotations

import inspect

from initlint.errors import InitlintError
from initlint.rule import Rule
from initlint.rules import ALL_RULES


def find_rule(code_or_name: str) -> type[Rule]:
    token = code_or_name.strip()
    for rule in ALL_RULES:
        if token.upper() == rule.code or token.lower() == rule.name:
            return rule
    known = ", ".join(f"{r.code} ({r.name})" for r in ALL_RULES)
    raise InitlintError(f"unknown rule {code_or_name!r}; known rules: {known}. `initlint rule --all` lists them.")


def rule_documentation(code_or_name: str) -> str:
    rule = find_rule(code_or_name)
    thresholds = ", ".join(f"{k} = {v!r}" for k, v in rule.thresholds.items()) or "none"
    return (
        f"{rule.code} {rule.name}\n\n{inspect.getdoc(rule)}\n\n"
        f"Defaults: {thresholds}\n"
        f"Examples: {len(rule.flagged)} model(s) that trigger it, {len(rule.clean)} that do not "
        f"(in initlint/rules/{inspect.getmodule(rule).__name__.rpartition('.')[2]}.py).\n"
    )


def rules_listing() -> str:
    width = max(len(r.name) for r in ALL_RULES)
    return "".join(f"{r.code}  {r.name:<{width}}  {r.summary()}\n" for r in ALL_RULES)


def rules_table() -> str:
    """The README's rules table, generated from the registry (a test keeps them in sync)."""
    lines = ["| code | name | what it flags | thresholds (default) |", "|---|---|---|---|"]
    for r in ALL_RULES:
        thresholds = ", ".join(f"`{k}` {v!r}" for k, v in r.thresholds.items())
        lines.append(f"| {r.code} | {r.name} | {r.summary()} | {thresholds} |")
    return "\n".join(lines) + "\n"

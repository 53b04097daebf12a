"""Which rules run: ruff-style ``select`` / ``ignore`` by code, code prefix or kebab-case name."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

from initlint.errors import InitlintError
from initlint.rule import Finding, Rule
from initlint.rules import ALL_RULES


def _matching(selector: str) -> list[type[Rule]]:
    token = selector.strip()
    if token.upper() == "ALL":
        return list(ALL_RULES)
    matches = [r for r in ALL_RULES if r.code.startswith(token.upper()) or r.name == token.lower()]
    if not matches:
        known = ", ".join(f"{r.code} ({r.name})" for r in ALL_RULES)
        raise InitlintError(
            f"unknown rule code {selector!r}; use a code, a code prefix such as IL1, a rule "
            f"name, or ALL. Known rules: {known}."
        )
    return matches


def known_selector(selector: str) -> list[type[Rule]]:
    """The rules ``selector`` names; an unknown one is ``validate.Invalid``."""
    from initlint.validate import Invalid

    try:
        return _matching(selector)
    except InitlintError as error:
        raise Invalid(str(error).rstrip(".")) from None


def split_codes(values: Iterable[str] | None) -> list[str]:
    """Accept both repeated options and comma-separated lists."""
    return [part for value in values or () for part in value.split(",") if part.strip()]


def select_rules(
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
    thresholds: Mapping[str, Mapping[str, float]] | None = None,
    extend_select: Iterable[str] | None = None,
) -> list[Rule]:
    """Instantiate the selected rules (all by default, plus ``extend_select``) minus the
    ignored, with threshold overrides."""
    selected = {r for s in split_codes(select) for r in _matching(s)} if select else set(ALL_RULES)
    selected |= {r for s in split_codes(extend_select) for r in _matching(s)}
    ignored = {r for s in split_codes(ignore) for r in _matching(s)}
    overrides = dict(thresholds or {})
    for code in overrides:
        _matching(code)
    chosen = sorted(selected - ignored, key=lambda r: r.code)
    if not chosen:
        raise InitlintError(
            "the selection runs no rule (every selected rule is ignored, or none is selected), so nothing "
            "would be checked; select at least one rule, e.g. --select ALL."
        )
    return [
        rule(**{k: v for c, t in overrides.items() if rule in _matching(c) for k, v in t.items()})
        for rule in chosen
    ]


def ignored_in_module(finding: Finding, per_module_ignores: Mapping[str, Iterable[str]]) -> bool:
    """Whether a ``per-module-ignores`` glob matching the finding's module path names its rule."""
    module = finding.module or ""
    return any(
        fnmatch.fnmatchcase(module, glob) and any(finding.code in {r.code for r in _matching(c)} for c in codes)
        for glob, codes in per_module_ignores.items()
    )


def unmatched_globs(per_module_ignores: Mapping[str, Iterable[str]], module_paths: Iterable[str]) -> list[str]:
    """The ``per-module-ignores`` globs that match none of ``module_paths``: likely misspelt."""
    paths = set(module_paths)
    return [glob for glob in per_module_ignores if not any(fnmatch.fnmatchcase(p, glob) for p in paths)]

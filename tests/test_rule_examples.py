"""Every rule's example models: the flagged ones must trigger it, the clean ones must not."""

from __future__ import annotations

import inspect

import pytest
from initlint.rules import ALL_RULES
from initlint.rules.kernel_collapse import KernelCollapse

import initlint

CASES = [
    pytest.param(rule, example, expected, id=f"{rule.code}-{example.build.__name__}")
    for rule in ALL_RULES
    for expected, examples in ((True, rule.flagged), (False, rule.clean))
    for example in examples
]


@pytest.mark.parametrize("rule, example, expected", CASES)
def test_example(rule, example, expected):
    """Clean examples of every rule are also checked against IL105, in the same probe: a
    healthy model of any kind keeps its kernel (an info finding, a collapse that the samples'
    shared offset explains, reports the design and does not count)."""
    select = [rule.code] if expected else [rule.code, KernelCollapse.code]
    report = initlint.check(example.build(), input_shapes=example.input_shapes or None, select=select)
    assert (rule.code in report.codes()) is expected, [f.message for f in report.findings]
    if not expected:
        assert not [f for f in report.findings if f.code == KernelCollapse.code and f.severity != "info"], \
            [f.message for f in report.findings]


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_rule_is_documented_and_has_examples(rule):
    doc = inspect.getdoc(rule)
    for section in ("What it does", "Why is this bad?", "Example", "Fix"):
        assert f"{section}" in doc, f"{rule.code} lacks a '{section}' section"
    assert rule.flagged and rule.clean, f"{rule.code} needs examples that must and must not trigger it"
    for name, default in rule.thresholds.items():
        assert f"``{name}`` ({default!r})" in doc, f"{rule.code} does not document {name}'s default"
    assert rule.summary()


def test_codes_and_names_are_unique_and_well_formed():
    codes = [r.code for r in ALL_RULES]
    names = [r.name for r in ALL_RULES]
    assert len(set(codes)) == len(codes) and len(set(names)) == len(names)
    assert all(len(c) == 5 and c.startswith("IL") and c[2:].isdigit() for c in codes)
    assert all(n == n.lower() and " " not in n for n in names)

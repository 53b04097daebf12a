"""Fuzzing the settings: random flag values and random ``[tool.initlint]`` tables never reach an
internal error ("unexpected ..."), and random thresholds that pass validation never crash a rule.

What it covers: flag parsing (``--select``, ``--ignore``, ``--seed``, ``--input-shape``,
``--device``, ``--fail-level``, ``--output-format``), reading and validating the config table
(every key, with values of every TOML type: huge ints, NaN, infinities, nested tables,
unknown keys and codes), and rule thresholds down to the rules themselves. It does not probe a
model per example (the target given does not exist, so a valid setting ends in the loader's
"does not exist"), which keeps 500 examples to seconds; the rules run on one probed graph.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from initlint.api import CheckOptions, ModelSource, analyse
from initlint.cli import main
from initlint.config import KEYS
from initlint.errors import InitlintError
from initlint.rules import ALL_RULES
from initlint.selection import select_rules
from initlint.validate import thresholds as valid_thresholds, Invalid

CODES = [r.code for r in ALL_RULES] + [r.name for r in ALL_RULES] + ["IL", "IL1", "ALL", "IL999", "", " ", ",", "il101"]
THRESHOLD_NAMES = sorted({name for r in ALL_RULES for name in r.thresholds}) + ["width", ""]
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, 2**64, 0.5, 1e308]),
)
SCALARS = st.one_of(NUMBERS, st.booleans(), st.text(max_size=12), st.sampled_from(CODES))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(CODES + THRESHOLD_NAMES)),
                                            inner, max_size=3)),
    max_leaves=8,
)


def _toml(value: object) -> str:
    """A TOML literal for ``value`` (inline tables and arrays; NaN and infinities as TOML spells them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if -(2**63) <= value < 2**63 else json.dumps(str(value))  # TOML ints are 64-bit
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


TABLES = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=8)), VALUES, max_size=4)
FLAGS = st.lists(st.one_of(
    st.tuples(st.sampled_from(["--select", "--ignore"]), st.one_of(st.sampled_from(CODES), st.text(max_size=8))),
    st.tuples(st.just("--seed"), st.one_of(NUMBERS.map(str), st.text(max_size=6))),
    st.tuples(st.just("--input-shape"), st.one_of(
        st.lists(st.integers(-3, 2**40), min_size=0, max_size=4).map(lambda s: ",".join(map(str, s))), st.text(max_size=6))),
    st.tuples(st.sampled_from(["--device", "--fail-level", "--output-format"]),
              st.one_of(st.sampled_from(["cpu", "auto", "error", "json", "sarif"]), st.text(max_size=5))),
), max_size=5)


def _one_message(output: str) -> bool:
    lines = [line for line in output.splitlines() if line.startswith(("initlint: error:", "Error:"))]
    return len(lines) == 1


@settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(table=TABLES, flags=FLAGS)
def test_random_flags_and_config_tables_give_exit_2_with_a_message_never_an_internal_error(table, flags):
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "pyproject.toml"
        config.write_text("[tool.initlint]\n" + "".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in table.items()))
        arguments = ["check", f"{folder}/missing_model.py:build", "--config", str(config)]
        for flag, value in flags:
            arguments += [flag, value]
        result = CliRunner().invoke(main, arguments, catch_exceptions=False)
    output = result.stdout + result.stderr
    assert result.exit_code == 2, output  # the model does not exist: nothing may pass
    assert "unexpected" not in output and "Traceback" not in output, output
    assert _one_message(output), output


@pytest.fixture(scope="module")
def probed_graph():
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[m for _ in range(4) for m in (torch.nn.Linear(16, 16), torch.nn.Tanh())],
                                torch.nn.Linear(16, 4))
    return analyse(model, (), CheckOptions(input_shapes=[(8, 16)]), ModelSource()).graph


@settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(overrides=st.dictionaries(st.sampled_from(CODES), st.dictionaries(st.sampled_from(THRESHOLD_NAMES), NUMBERS, max_size=3),
                                 max_size=3))
def test_thresholds_that_pass_validation_run_every_rule_without_error(probed_graph, overrides):
    try:
        checked = valid_thresholds(overrides)
        rules = select_rules(None, None, checked)
    except (Invalid, InitlintError):
        return
    for rule in rules:
        list(rule.check(probed_graph))  # e.g. no "math domain error" from a threshold of 0


TINY = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(options=st.fixed_dictionaries({}, optional={
    "seed": st.one_of(NUMBERS, st.text(max_size=3)),
    "input_shapes": st.one_of(st.none(), st.text(max_size=4),
                              st.lists(st.lists(st.integers(-2, 64), max_size=3), max_size=2)),
    "batch_size": st.one_of(st.integers(-2, 256), st.floats()),
    "select": st.one_of(st.sampled_from(CODES), st.lists(st.sampled_from(CODES), max_size=2), st.integers()),
    "device": st.one_of(st.sampled_from(["cpu", "auto", None]), st.text(max_size=4)),
}))
def test_random_api_options_give_a_report_or_initlint_error(options):
    """These examples probe for real (a 3-layer model), so seeds, shapes and batch sizes that
    pass validation are used, not only parsed. Sizes stay small: a huge shape that fits the
    memory budget would be probed for real (the budget itself is tested in test_memory)."""
    import initlint

    try:
        initlint.check(TINY, **options)
    except InitlintError:
        pass

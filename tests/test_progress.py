"""The progress bar: on a terminal's stderr for large models only, never in machine output."""

from __future__ import annotations

import io
import sys

import pytest
import torch
import torch.nn as nn

import initlint
from initlint.progress import LARGE_MODEL_MODULES, Progress


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def relu_stack(modules: int) -> nn.Module:
    torch.manual_seed(0)
    pairs = (modules - 1) // 2  # the Sequential itself is a module too
    return nn.Sequential(*[m for _ in range(pairs) for m in (nn.Linear(16, 16), nn.ReLU())])


LARGE = relu_stack(LARGE_MODEL_MODULES + 1)
SMALL = relu_stack(LARGE_MODEL_MODULES // 2)


@pytest.fixture
def terminal(monkeypatch):
    """Returns a function that makes stderr a terminal. Call it in the test's body: pytest's
    output capture replaces sys.stderr again after fixtures have run."""

    def make() -> TerminalStream:
        stream = TerminalStream()
        monkeypatch.setattr(sys, "stderr", stream)
        return stream

    return make


def test_a_large_model_shows_each_stage_to_completion(terminal):
    stream = terminal()
    initlint.check(LARGE, show_progress=True)
    shown = stream.getvalue()
    for stage in ("tracing", "forward", "backward"):
        assert f"initlint: {stage}" in shown
    assert shown.count("100%") == 3 and "101%" not in shown


@pytest.mark.parametrize("model, wanted", [(SMALL, True), (LARGE, False)])
def test_small_models_and_unwanted_bars_stay_silent(terminal, model, wanted):
    stream = terminal()
    initlint.check(model, show_progress=wanted)
    assert stream.getvalue() == ""


def test_the_bar_never_changes_the_report(terminal):
    terminal()
    quiet = initlint.check(LARGE).to_dict()
    shown = initlint.check(LARGE, show_progress=True).to_dict()
    assert [n["std"] for n in quiet["nodes"]] == [n["std"] for n in shown["nodes"]]
    assert quiet["findings"] == shown["findings"]


def test_a_stderr_that_is_not_a_terminal_gets_no_bar(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    initlint.check(LARGE, show_progress=True)
    assert stream.getvalue() == ""


@pytest.mark.parametrize("output_format, wanted", [
    ("text", True), ("concise", True), ("json", False), ("sarif", False), ("github", False),
])
def test_the_cli_wants_a_bar_only_for_formats_people_read(run_cli, monkeypatch, output_format, wanted):
    from test_cli import HEALTHY

    import initlint.api

    asked = []
    monkeypatch.setattr(initlint.api, "for_model", lambda model, want: asked.append(want) or Progress())
    run_cli("check", HEALTHY, "--output-format", output_format)
    assert asked == [wanted]

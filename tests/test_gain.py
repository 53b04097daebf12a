"""`initlint gain`: the data-driven gain against calculate_gain on deep stacks."""

from __future__ import annotations

import json
import math

import pytest

from initlint.gain import recommend_gain


@pytest.fixture(scope="module")
def tanh_50(request):
    from click.testing import CliRunner

    from initlint.cli import main

    result = CliRunner().invoke(main, ["gain", "tanh", "--depth", "50", "--output-format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_tanh_five_thirds_holds_forward_std_but_lets_gradients_grow(tanh_50):
    curves = tanh_50["calculate_gain_curves"]
    assert tanh_50["calculate_gain"] == pytest.approx(5 / 3)
    # forward: 5/3 has a stable fixed point near 0.65; backward: tens of times growth over 50 layers
    assert 0.55 < curves["forward_std"][-1] < 0.75
    assert curves["grad_std"][0] > 20


def test_tanh_recommendation_is_near_1_1_and_tame(tanh_50):
    best = tanh_50["recommended"]
    assert 1.0 < best["gain"] < 1.2
    assert all(0.25 <= v <= 4 for v in best["forward_std"])
    assert all(0.25 <= g <= 4 for g in best["grad_std"])
    assert len(best["forward_std"]) == len(best["grad_std"]) == 50


def test_text_output_names_all_three_answers(run_cli):
    result = run_cli("gain", "tanh", "--depth", "10", "--width", "32")
    assert result.exit_code == 0
    assert "scale 1.592537, bias 0.000000" in result.stdout
    assert "calculate_gain('tanh') = 1.666667" in result.stdout
    assert "data-driven gain" in result.stdout


def test_relu_recommendation_is_kaimings_sqrt_2():
    """For ReLU, Kaiming's fan-in gain sqrt(2) keeps both directions for square layers."""
    best = recommend_gain("relu", depth=20, width=64)
    assert best.gain == pytest.approx(math.sqrt(2), abs=0.1)


def test_unknown_activation_exits_2(run_cli):
    result = run_cli("gain", "swoosh")
    assert result.exit_code == 2 and "unknown activation" in result.stderr

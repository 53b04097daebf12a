"""Probe inputs: parsing --input-shape and inferring shapes from the first layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import initlint
from initlint.errors import InitlintError
from initlint.inputs import DEFAULT_BATCH, DEFAULT_SPATIAL, DEFAULT_TOKENS, parse_shape


@pytest.mark.parametrize("text, shape", [("8,3,224,224", (8, 3, 224, 224)), (" 4, 16 ", (4, 16)), ("2x5", (2, 5))])
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["", "8,,3", "8,a", "0,3", "-1,2", "3.5"])
def test_parse_shape_rejects_nonsense(text):
    with pytest.raises(InitlintError, match="--input-shape"):
        parse_shape(text)


class TwoTowers(nn.Module):
    """Three inputs of different kinds, each behind reshapes or directly consumed."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.conv = nn.Conv1d(5, 16, 3, padding=1)
        self.fc = nn.Linear(12, 16)

    def forward(self, ids, signal, features):
        return self.embed(ids).mean(1) + self.conv(signal).mean(2) + self.fc(features.flatten(1))


def test_inference_per_input_kind():
    report = initlint.check(TwoTowers())
    shapes = {spec.name: spec.shape for spec in report.inputs}
    assert shapes == {
        "ids": (DEFAULT_BATCH, DEFAULT_TOKENS),
        "signal": (DEFAULT_BATCH, 5, DEFAULT_SPATIAL[1]),
        "features": (DEFAULT_BATCH, 12),
    }
    assert all(spec.inferred_from for spec in report.inputs)
    ids = next(s for s in report.inputs if s.name == "ids")
    assert ids.integer_high == 100


def test_conv2d_and_bare_layer_roots():
    report = initlint.check(nn.Sequential(nn.Conv2d(3, 4, 3)))
    assert report.inputs[0].shape == (DEFAULT_BATCH, 3, DEFAULT_SPATIAL[2], DEFAULT_SPATIAL[2])
    assert initlint.check(nn.Linear(7, 2)).inputs[0].shape == (DEFAULT_BATCH, 7)


def test_uninferable_input_says_which_flag_to_pass():
    with pytest.raises(InitlintError, match="--input-shape"):
        initlint.check(nn.Sequential(nn.Tanh()))


def test_wrong_number_of_shapes():
    with pytest.raises(InitlintError, match="takes 3 input"):
        initlint.check(TwoTowers(), input_shapes=[(8, 12)])


def test_given_shapes_keep_token_ids_in_vocabulary():
    report = initlint.check(nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2)), input_shapes=[(5, 3)])
    assert report.inputs[0].integer_high == 10
    assert report.inputs[0].to_dict()["dtype"] == "int64"


def test_example_inputs_are_used_as_given():
    x = torch.full((4, 3), 2.0)
    report = initlint.check(nn.Sequential(nn.Linear(3, 3)), x)
    node = next(n for n in report.to_dict()["nodes"] if n["op"] == "placeholder")
    assert node["mean"] == 2.0 and node["std"] == 0.0

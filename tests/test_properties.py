"""Property-based: random layer stacks with branches never crash initlint, and the same seed
gives the same report."""

from __future__ import annotations

import json

import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import initlint
from initlint.moments import ACTIVATIONS

WIDTHS = st.sampled_from([4, 8, 16])
LEAF_BLOCKS = st.one_of(
    st.tuples(st.just("linear"), WIDTHS, st.sampled_from([0.1, 1.0, 5.0])),
    st.tuples(st.just("activation"), st.sampled_from(sorted(ACTIVATIONS))),
    st.tuples(st.just("norm"), st.sampled_from(["layer", "batch"])),
    st.tuples(st.just("dropout")),
    st.tuples(st.just("gate")),
)
BLOCKS = st.recursive(
    LEAF_BLOCKS,
    lambda inner: st.one_of(
        st.tuples(st.just("residual"), st.lists(inner, min_size=1, max_size=3)),
        st.tuples(st.just("concat"), st.lists(inner, min_size=1, max_size=2), st.lists(inner, min_size=1, max_size=2)),
    ),
    max_leaves=8,
)


class Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Concat(nn.Module):
    def __init__(self, left: nn.Module, right: nn.Module, width: int) -> None:
        super().__init__()
        self.left, self.right = left, right
        self.merge = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(torch.cat([self.left(x), self.right(x)], dim=1))


class Gate(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.excite = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.excite(x))


def build(blocks: list, width: int) -> tuple[nn.Module, int]:
    """A Sequential of ``blocks`` for inputs of ``width`` features, and its output width."""
    layers: list[nn.Module] = []
    for block in blocks:
        kind = block[0]
        if kind == "linear":
            linear = nn.Linear(width, block[1])
            with torch.no_grad():
                linear.weight.mul_(block[2])
            layers.append(linear)
            width = block[1]
        elif kind == "activation":
            layers.append(ACTIVATIONS[block[1]]())
        elif kind == "norm":
            layers.append(nn.LayerNorm(width) if block[1] == "layer" else nn.BatchNorm1d(width))
        elif kind == "dropout":
            layers.append(nn.Dropout(0.5))
        elif kind == "gate":
            layers.append(Gate(width))
        elif kind == "residual":
            body, out = build(block[1], width)
            layers.append(Residual(nn.Sequential(body, nn.Linear(out, width))))
        else:  # concat
            (left, left_out), (right, right_out) = build(block[1], width), build(block[2], width)
            layers.append(Concat(nn.Sequential(left, nn.Linear(left_out, width)),
                                 nn.Sequential(right, nn.Linear(right_out, width)), width))
    return nn.Sequential(*layers), width


def report_of(model: nn.Module, width: int, seed: int) -> tuple[str, str]:
    """The trace mode and the JSON report without its timing (NaN compares equal as text)."""
    document = initlint.check(model, input_shapes=[(8, width)], seed=seed).to_dict()
    assert "seconds" not in document  # timings only on request: reports are reproducible byte for byte
    return document["trace"]["mode"], json.dumps(document, sort_keys=True)


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(BLOCKS, min_size=1, max_size=6), width=WIDTHS, seed=st.integers(0, 2**16))
def test_random_networks_never_crash_and_reports_are_reproducible(blocks, width, seed):
    torch.manual_seed(seed)
    model, _ = build(blocks, width)
    mode, first = report_of(model, width, seed)
    assert mode == "fx"
    assert report_of(model, width, seed)[1] == first

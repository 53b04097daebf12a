"""The networkx view: roles, main path, depth, and where nodes point in the source."""

from __future__ import annotations

import torch
import torch.nn as nn

import initlint
from initlint.graph import GATE, GLOBAL_POOL, OUTPUT, RESIDUAL_ADD, SQUEEZE


class SEBlock(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.fc1 = nn.Conv2d(c, 2, 1)
        self.fc2 = nn.Conv2d(2, c, 1)
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(y.mean((2, 3), keepdim=True)))))
        z = x + y * gate
        return self.head(z.mean((2, 3)))


def test_roles_main_path_and_depth():
    report = initlint.check(SEBlock(), input_shapes=[(4, 8, 6, 6)])
    graph = report.graph
    roles = {name: view.roles for name, view in graph.nodes.items()}
    assert GATE in roles["sigmoid"]
    assert {"pool", SQUEEZE} <= roles["mean"]  # the squeeze only reaches the output through the gate
    assert {"pool", GLOBAL_POOL} <= roles["mean_1"] and SQUEEZE not in roles["mean_1"]
    assert RESIDUAL_ADD in roles["add"]
    assert OUTPUT in roles["head"]
    # the main path takes the skip connection, not the residual branch (nor the gate's branch)
    assert graph.main_path == ["x", "add", "mean_1", "head"]
    assert [graph.view(n).depth for n in graph.main_path] == [0, 9, 10, 11]
    assert [graph.view(n).depth for n in ("conv", "relu", "mul")] == [1, 2, 8]
    assert [v.name for v in graph.body()] == ["x", "add"]


class TokenModel(nn.Module):
    """A ViT-like tail: tokens, a norm, the class token selected, a head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.norm(self.embed(x))[:, 0])


def test_class_token_selection_ends_the_body():
    graph = initlint.check(TokenModel(), input_shapes=[(4, 5, 6)]).graph
    assert GLOBAL_POOL in graph.view("getitem").roles
    assert [v.name for v in graph.body()] == ["x", "embed", "norm"]


def test_findings_point_at_the_line_that_calls_the_layer():
    report = initlint.check(SEBlock(), input_shapes=[(4, 8, 6, 6)])
    source_line = next(
        i for i, line in enumerate(open(__file__).read().splitlines(), 1) if "gate = torch.sigmoid" in line
    )
    location = report.graph.view("sigmoid").location
    assert (location.file, location.line) == (__file__, source_line)
    assert report.graph.view("fc1").module == "fc1"
    assert report.graph.view("sigmoid").module == ""


class TokensWithPositions(nn.Module):
    """An embedding plus a learned position table sliced by the input's length."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(100, 16)
        self.positions = nn.Parameter(torch.randn(1, 64, 16))
        self.head = nn.Linear(16, 100)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids) + self.positions[:, : ids.shape[1]])


def test_sizes_taken_from_the_input_carry_no_signal():
    """``ids.shape[1]`` depends on the input, but the position slice it selects is a constant:
    the main path runs through the embedding, not through the shape."""
    report = initlint.check(TokensWithPositions())
    graph = report.graph
    assert [graph.view(n).op_name for n in graph.main_path] == ["ids", "embedding", "add", "linear"]
    slice_of_table = [v for v in graph.nodes.values() if v.op == "call_function" and v.op_name == "getitem"]
    assert slice_of_table and all(v.name not in graph.input_dependent for v in slice_of_table)
    assert not report.findings, [f.message for f in report.findings]

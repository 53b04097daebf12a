"""The memory estimate made before probing: exact forward sizes from fake tensors."""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from initlint.inputs import InputSpec
from initlint.memory import PROBE_FACTOR, available_bytes, forward_bytes


def test_forward_bytes_adds_up_every_value_without_allocating_them():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    graph_module = fx.symbolic_trace(model)
    specs = [InputSpec("x", (8, 16))]
    float32 = 4
    expected = 8 * (16 + 32 + 32 + 4) * float32  # input, linear, relu, linear
    assert forward_bytes(graph_module, specs, torch.float32, torch.device("cpu")) == expected
    huge = [InputSpec("x", (10**12, 16))]  # 64 TB of input: only its size is computed
    assert forward_bytes(graph_module, huge, torch.float32, torch.device("cpu")) == expected // 8 * 10**12


def test_integer_inputs_are_counted_as_int64():
    graph_module = fx.symbolic_trace(nn.Sequential(nn.Embedding(100, 8)))
    specs = [InputSpec("ids", (4, 10), integer_high=100)]
    assert forward_bytes(graph_module, specs, torch.float32, torch.device("cpu")) == 4 * 10 * (8 + 8 * 4)


def test_this_machine_reports_its_free_memory():
    free = available_bytes(torch.device("cpu"))
    assert free is not None and free > 0 and PROBE_FACTOR >= 1

"""Models on the meta device, probed one layer at a time (initlint/materialize.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

import initlint
from initlint.errors import InitlintError
from initlint.materialize import PieceByPiece


def _sigmoid_mlp(width: int = 256, depth: int = 6) -> nn.Sequential:
    layers = [m for _ in range(depth) for m in (nn.Linear(width, width), nn.Sigmoid())]
    return nn.Sequential(*layers, nn.LayerNorm(width), nn.Linear(width, 10))


def _nodes(report) -> dict[str, dict]:
    return {n["name"]: n for n in report.to_dict()["nodes"]}


def test_probe_equals_a_real_model_holding_the_same_weights():
    """The forward builds each layer from its seed; the backward rebuilds the weights it saved
    as recipes. A real model given those very weights must measure the same, forward and back:
    a backward that rebuilt different weights would change every gradient."""
    with torch.device("meta"):
        meta = _sigmoid_mlp()
    x = torch.randn(32, 256, generator=torch.Generator().manual_seed(0))
    report = initlint.check(meta, x)
    layers = PieceByPiece(meta, torch.device("cpu"), seed=0)
    real = nn.Sequential(*[layers.layer(str(i)) for i in range(len(meta))])
    expected = _nodes(initlint.check(real.requires_grad_(True), x))
    for name, node in _nodes(report).items():
        assert node["std"] == pytest.approx(expected[name]["std"], rel=1e-6), name
        assert node["grad_std"] == pytest.approx(expected[name]["grad_std"], rel=1e-5), name


def test_a_meta_model_reads_like_the_same_architecture_built_for_real():
    """Different random draws of the same initializers: the same findings, and stds within 10 %
    (each hidden std is over 64 x 512 values; draws of 512x512 weights move it by ~2 %)."""
    with torch.device("meta"):
        meta = _sigmoid_mlp(width=512)
    torch.manual_seed(1)
    real = _sigmoid_mlp(width=512)
    on_meta, on_cpu = (initlint.check(m, input_shapes=[(64, 512)]) for m in (meta, real))
    assert sorted(f.code for f in on_meta.findings) == sorted(f.code for f in on_cpu.findings)
    assert {f.code for f in on_meta.findings} >= {"IL101"}  # default-init sigmoids: the signal fades
    expected = _nodes(on_cpu)
    hidden = [n for n in _nodes(on_meta).values() if n["shape"] == [64, 512]]
    assert len(hidden) == 14  # the input, 6 Linear, 6 Sigmoid, the LayerNorm
    for node in hidden:
        assert node["std"] == pytest.approx(expected[node["name"]]["std"], rel=0.10), node["name"]


def test_at_most_one_layer_of_weights_is_alive_at_a_time():
    """Layers of 1, 4 and 2 MiB: the weights alive at once peak at the largest layer alone."""
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(512, 512, bias=False), nn.ReLU(), nn.Linear(512, 2048, bias=False),
                             nn.ReLU(), nn.Linear(2048, 256, bias=False))
    report = initlint.check(meta, input_shapes=[(8, 512)])
    peak = float(re.search(r"at most ([\d.]+) MiB", report.probe_note).group(1))
    assert peak == pytest.approx(512 * 2048 * 4 / 2**20, abs=0.06)  # printed to 0.1 MiB


def test_peak_memory_stays_far_below_the_model_size():
    """2 GiB of parameters on meta, probed in a fresh process: its peak resident memory (VmHWM)
    stays under 1 GiB, about what torch itself and one 64 MiB layer (x2 in the backward) take."""
    script = textwrap.dedent("""
        import torch, torch.nn as nn, initlint
        with torch.device("meta"):
            model = nn.Sequential(*[m for _ in range(32) for m in (nn.Linear(4096, 4096), nn.Tanh())])
        initlint.check(model, input_shapes=[(8, 4096)])
        print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")))
    """)
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    peak_kib = int(output.stdout.split()[-1])
    assert peak_kib < 2**20, f"peak {peak_kib / 2**20:.2f} GiB for a 2 GiB model"


def test_multihead_attention_is_initialized_as_its_constructor_does():
    """MultiheadAttention's own initializer zeroes out_proj's bias after out_proj initialized it:
    children first, then the parent, as the constructors ran."""
    with torch.device("meta"):
        attention = nn.Module()
        attention.attn = nn.MultiheadAttention(32, 4, batch_first=True)
    real = PieceByPiece(attention, torch.device("cpu"), seed=0).layer("attn")
    assert torch.count_nonzero(real.out_proj.bias) == 0
    assert real.in_proj_weight.std().item() == pytest.approx((6 / (32 + 96)) ** 0.5 / 3 ** 0.5, rel=0.1)


class _ScaledLinear(nn.Module):
    """A layer with a parameter outside any torch.nn layer and no reset_parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 16)
        self.scale = nn.Parameter(torch.ones(16))

    def forward(self, x):
        return self.linear(x) * self.scale


def test_a_meta_tensor_without_an_initializer_is_refused_with_advice():
    with torch.device("meta"):
        model = _ScaledLinear()
    with pytest.raises(InitlintError, match="scale is on the meta device outside any layer"):
        initlint.check(model, input_shapes=[(4, 16)])
    with pytest.raises(InitlintError, match="without reset_parameters"):
        initlint.check(nn.Sequential(model), input_shapes=[(4, 16)], leaf_modules=[_ScaledLinear])


def test_fix_refuses_a_meta_model():
    with torch.device("meta"):
        model = _sigmoid_mlp()
    with pytest.raises(InitlintError, match="meta device; `initlint fix` writes the fixed weights"):
        initlint.fix(model)

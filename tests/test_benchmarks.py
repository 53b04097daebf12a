"""The training benchmark runs, and on its quick case initlint fix trains where the baselines cannot."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_train_digits_quick():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_digits.py"), "--quick"],
        capture_output=True, text=True, check=True, timeout=300,
    )
    runs = {row["init"]: row["test_accuracy"] for row in map(json.loads, result.stdout.splitlines())}
    fixes = ("initlint fix", "initlint fix --fold", "initlint fix --method renorm", "initlint fix --method renorm --fold",
             "initlint fix --method dks --fold")
    assert set(runs) == {"default", "calculate_gain", "lsuv", *fixes}
    # a 6-layer default sigmoid MLP after 2 epochs is at chance (0.10 for 10 classes);
    # fixed by either method, it learns: the margin is far beyond seed noise
    assert runs["default"] < 0.3
    assert all(runs[fix] > 0.7 for fix in fixes), runs
    assert "| initlint fix |" in result.stderr


def test_zoo_sweep_quick():
    """Real torchvision and timm architectures: no crash, fully traced, plausible reports."""
    if importlib.util.find_spec("timm") is None or importlib.util.find_spec("torchvision") is None:
        pytest.skip("the zoo needs torchvision and timm (the test extra installs them)")
    from initlint.rules import ALL_RULES

    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "zoo_sweep.py"), "--quick"],
        capture_output=True, text=True, check=True, timeout=600,
    )
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {row["library"] for row in rows} == {"torchvision", "timm"} and len(rows) >= 8
    codes = {rule.code for rule in ALL_RULES}
    for row in rows:
        assert row["error"] is None, row
        assert row["trace_mode"] == "fx" and row["nodes"] > 50, row
        assert set(row["findings"]) <= codes and "IL001" not in row["findings"], row  # random init is finite
        # the probe input is N(0, 1) with 8*3*64*64 values: its std is 1 within a few 1e-3
        assert abs(row["input_std"] - 1) < 0.02, row


def test_bench_check_quick_prints_ratios():
    """The check benchmark runs and reports time and memory ratios against a bare trace + step."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_check.py"), "--quick"],
        capture_output=True, text=True, check=True, timeout=600,
    )
    document = json.loads(result.stdout)
    (mlp,) = document["models"]
    assert mlp["check_s"] > 0 and mlp["bare_s"] > 0
    # the ratio is of unrounded medians; the printed seconds have 4 decimals (0.0001 of ~0.02 s or more)
    assert mlp["time_ratio"] == pytest.approx(mlp["check_s"] / mlp["bare_s"], rel=0.03)
    assert mlp["time_ratio_input_only"] == pytest.approx(mlp["check_s"] / mlp["bare_input_only_s"], rel=0.03)
    assert 0 < mlp["peak_mb"]["build"] <= mlp["peak_mb"]["bare"] * 1.05  # the step adds memory
    assert document["cli"]["ratio"] > 0


def test_bench_fix_quick_times_the_three_models():
    """The fix benchmark fixes a deep sigmoid MLP and reports forward times and their ratios."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_fix.py"), "--quick"],
        capture_output=True, text=True, check=True, timeout=300,
    )
    (mlp,) = json.loads(result.stdout)["models"]
    assert set(mlp["forward_ms"]) == {"original", "traced", "renorm_nodes", "folded"}
    assert mlp["renorm_nodes"] >= 19 and mlp["unfolded_constants"] == 0  # one per sigmoid but the last
    for name, ratio in mlp["ratio_to_original"].items():
        expected = mlp["forward_ms"][name] / mlp["forward_ms"]["original"]
        assert ratio == pytest.approx(expected, rel=0.01), name


def test_bench_scale_small_keeps_one_layer_of_weights():
    """A small meta transformer: the weights alive at once are its largest layer, the
    32000 x 256 embedding (or the head of the same size): 31.25 MiB."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--width", "256", "--blocks", "2",
         "--heads", "4"], capture_output=True, text=True, check=True, timeout=300,
    )
    document = json.loads(result.stdout)
    width, blocks = 256, 2
    per_block = 12 * width * width + 9 * width + 4 * width  # qkv, out, mlp weights; their biases; 2 norms
    assert document["parameters"] == 2 * 32_000 * width + blocks * per_block + 2 * width
    # the note rounds to 0.1 MiB: 31.25 prints as 31.2
    assert document["weights_at_once_mib"] == pytest.approx(32_000 * width * 4 / 2**20, abs=0.06)


def test_real_models_quick():
    """Library models through the CLI with no wrapper: captured as graphs, no false findings
    at default init, and a training step on the same batch timed beside the check."""
    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("diffusers") is None:
        pytest.skip("the real models need transformers and diffusers (the test extra installs them)")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "real_models.py"), "--quick"],
        capture_output=True, text=True, check=True, timeout=600,
    )
    rows = {row["model"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert set(rows) == {"tiny_gpt2", "unet2d"}, rows
    for row in rows.values():
        assert row["capture"] == "export" and row["findings"] == [], row
        assert row["check_seconds"] > 0 and row["training_step_seconds"] > 0
        assert row["ratio"] == pytest.approx(row["check_seconds"] / row["training_step_seconds"], rel=0.02)
    assert rows["unet2d"]["inputs"]["timestep"] == [8]  # named with --input, as the README says
    assert "| tiny_gpt2 | export |" in result.stderr


def test_fix_real_models_quick():
    """A library model fixed and folded through the CLI: everything folds, the folded model
    computes the renorm-node model, nothing gets worse, the tied logits keep their std within
    issue 12's 2x, and the written model runs on one sample of half the planned length."""
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("the real models need transformers (the test extra installs it)")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fix_real_models.py"), "--quick"],
        capture_output=True, text=True, check=True, timeout=600,
    )
    (row,) = map(json.loads, result.stdout.splitlines())
    assert row["model"] == "tiny_gpt2" and row["constants"] > 0 and row["left_out"] == 0, row
    assert row["fold_error"] < 1e-4 and row["declined"] == [] and row["warnings_after"] == [], row
    assert row["runs_on_one_sample"] is True, row
    (before,), (after,) = row["output_std_before"], row["output_std_after"]
    assert 0.5 < after / before < 2, row
    assert "| tiny_gpt2 | export |" in result.stderr


def test_bench_gain_quick_times_the_search():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gain.py"), "--quick"],
        capture_output=True, text=True, check=True, timeout=600,
    )
    (tanh,) = json.loads(result.stdout)["search"]
    assert tanh["activation"] == "tanh" and tanh["gain"] == 1.11 and tanh["search_s"] > 0


def test_false_alarms_quick():
    """Healthy textbook models (a CIFAR ResNet, a max-pool CNN, a Transformer encoder, the
    bundled healthy example): no finding at warning level or above, one JSON line each."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "false_alarms.py"), "--quick"],
        capture_output=True, text=True, check=True, timeout=600,
    )
    rows = {row["model"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert {"resnet20", "max_pool_cnn", "encoder_2x64", "healthy_mlp"} <= set(rows), rows
    for row in rows.values():
        assert row["false_alarms"] == 0, row
        assert row["false_alarms"] == sum(f["severity"] in ("warning", "error") for f in row["findings"]), row
    # ResNet-20's global pool into its head: reported, as info, not hidden
    assert {"code": "IL301", "severity": "info", "module": "12"} in rows["resnet20"]["findings"]
    assert "0 finding(s) at warning level or above" in result.stderr


def test_bench_attention_quick_times_the_softmax_statistics():
    """The attention benchmark reports, per encoder, the check's time and the part of it spent
    measuring softmax rows (a part: less than the whole)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_attention.py"), "--quick"],
        capture_output=True, text=True, check=True, timeout=600,
    )
    models = json.loads(result.stdout)["models"]
    assert [m["model"] for m in models] == ["encoder_sdpa", "encoder_written_out"]
    for model in models:
        assert 0 < model["softmax_statistics_s"] < model["check_s"]
        assert model["share"] == pytest.approx(model["softmax_statistics_s"] / model["check_s"], rel=0.05, abs=1e-3)


def test_kernel_stacks_quick():
    """The kernel benchmark prints each stack's C map at the body's end and the probe's cost."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "kernel_stacks.py"), "--quick"],
        capture_output=True, text=True, check=True, timeout=600,
    )
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    stacks = {row["stack"]: row for row in rows if "stack" in row}
    assert len(stacks) == 9
    for row in stacks.values():
        assert row["kernel_slope"] == pytest.approx((1 - row["kernel"]["0.9"]) / 0.1, abs=0.01)
    # tanh without bias is odd: orthogonal inputs stay orthogonal (within the 0.02 or so that
    # 128 groups at width 128 leave); a gain of 5/3 is deeper in the chaotic phase than 1
    for gain in ("5/3", "1"):
        assert abs(stacks[f"tanh, Xavier gain {gain}"]["kernel"]["0"]) < 0.05
    assert stacks["tanh, Xavier gain 5/3"]["kernel"]["0.9"] < stacks["tanh, Xavier gain 1"]["kernel"]["0.9"]
    # kernel shaping sets the body's slope to 1.5: cosine 0.9 ends near 1 - 1.5 * 0.1, 0 near 0
    for activation in ("tanh", "relu"):
        shaped = stacks[f"{activation} after initlint fix (kernel shaping)"]["kernel"]
        assert shaped["0"] < 0.3 and shaped["0.9"] > 0.7, shaped
    # folded, the ReLU stack's pairs are linear up to its last ReLU, whose uncentred output
    # keeps the ReLU kernel's C(0) = 1/pi, and C(0.9) of that one ReLU, 0.91; never the
    # collapse (C(0) near 1) of the renorm constants alone
    folded = stacks["relu after initlint fix --fold (looks-linear pairs)"]["kernel"]
    assert folded["0"] < 0.45 and folded["0.9"] > 0.85, folded
    (cost,) = [row for row in rows if "model" in row]
    assert 0 < cost["kernel_probe_s"] and 0 < cost["kernel_share"]


def _digits_models():
    spec = importlib.util.spec_from_file_location("digits_models", ROOT / "benchmarks" / "digits_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["digits_models"] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module


def test_digits_models_baselines_do_what_they_say():
    """Every row's model takes its input shape; gains() names each weighted layer once; Fixup
    makes each residual block the identity (its last conv is zero); the LSUV-style loop pins
    the SE gates (IL401 flags them) while the untouched SE-CNN has no IL401."""
    import torch
    import torch.nn as nn

    import initlint

    models = _digits_models()
    torch.manual_seed(0)
    for name, row in models.EVERY_ROW.items():
        model = row.build()
        assert model(torch.randn(4, *row.input_shape)).shape == (4, 10), name
        weighted = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        assert sorted(map(id, (layer for layer, _ in model.gains()))) == sorted(map(id, weighted)), name
    resnet = models.with_fixup(models.ResidualCNN(4))
    x = torch.randn(4, 16, 8, 8)
    assert all(torch.equal(block(x), x) for block in resnet.blocks)
    assert resnet(torch.randn(4, 1, 8, 8)).abs().max() == 0  # the head is zero too
    batch = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    stuck = models.lsuv_degenerate(models.SECNN(4), batch)
    codes = [f.code for f in initlint.check(stuck, input_shapes=[(64, 1, 8, 8)]).findings]
    assert "IL401" in codes, codes
    codes = [f.code for f in initlint.check(models.SECNN(4), input_shapes=[(64, 1, 8, 8)]).findings]
    assert "IL401" not in codes, codes

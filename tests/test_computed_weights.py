"""Layers whose weight is computed on each call (torch's weight_norm and spectral_norm, as
parametrizations or as the older hooks), layers with other hooks, and models in another dtype:
what ``fix`` writes rebuilds them as they were, or refuses, and never computes something else."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

from initlint import export
from initlint.api import CheckOptions, ModelSource
from initlint.errors import InitlintError
from initlint.export import FOLDED_FILE, write_fix
from initlint.fixer import run_fix
from initlint.load import load_target
from initlint.safe_code import CodeNotWritable

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.* is deprecated:FutureWarning")


def _old_style(norm):
    """torch.nn.utils.weight_norm / spectral_norm: deprecated hooks, still in much audio and GAN code."""
    def apply(layer: nn.Module) -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return norm(layer)
    return apply


NORMS = {
    "weight_norm": lambda layer: parametrizations.weight_norm(layer, dim=1),
    "spectral_norm": lambda layer: parametrizations.spectral_norm(layer, n_power_iterations=2),
    "old weight_norm": _old_style(nn.utils.weight_norm),
    "old spectral_norm": _old_style(nn.utils.spectral_norm),
}
MAGNITUDES = {"weight_norm": "parametrizations.weight.original0", "old weight_norm": "weight_g"}
"""weight_norm's g, which scales its weight exactly (W = g v / |v|); spectral_norm's weight has
no such parameter."""


def _normed_mlp(norm) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(norm(nn.Linear(8, 16)), nn.Tanh(), norm(nn.Linear(16, 16)), nn.Tanh(), nn.Linear(16, 4))


def _fixed(model: nn.Module, fold: bool = False):
    torch.manual_seed(0)
    return run_fix(model, (), CheckOptions(input_shapes=[(64, 8)]), ModelSource(), fold=fold)


def _only_magnitudes_changed(model: nn.Module, fixed: nn.Module, magnitude: str | None) -> None:
    """Each normalized layer's own tensors are the user's, but for weight_norm's g (scaled by
    one factor: its direction v and its bias may change only through what a constant adds)."""
    for path in ("0", "2"):
        before, after = model.get_submodule(path).state_dict(), fixed.get_submodule(path).state_dict()
        for key, value in before.items():
            if key == magnitude:
                ratio = after[key] / value
                torch.testing.assert_close(ratio, torch.full_like(ratio, ratio.flatten()[0].item()))
            elif key != "bias":
                torch.testing.assert_close(after[key], value)


@pytest.mark.parametrize("name", NORMS)
def test_a_normalized_layer_is_rebuilt_with_its_normalization(tmp_path, name):
    """The written model has the norm on the same layers with the same settings (its state dict
    has the same keys, g and v or the spectral vectors) and computes what the fixed model does.
    weight_norm's layers are rescaled through g; spectral_norm's, whose weight no parameter
    scales, are left alone."""
    model = _normed_mlp(NORMS[name])
    result = _fixed(model)
    write_fix(tmp_path / "fixed", result, "test", force=False)
    loaded = load_target(str(tmp_path / "fixed")).model
    assert set(loaded.state_dict()) == set(result.patched.state_dict())
    for path in ("0", "2"):
        assert set(loaded.get_submodule(path).state_dict()) == set(model.get_submodule(path).state_dict())
    x = torch.randn(16, 8)
    torch.testing.assert_close(loaded.eval()(x), result.patched.eval()(x))
    targets = [r.target for r in result.plan if r.site == "weighted"]
    if name in MAGNITUDES:
        assert targets == ["std 1", "std 1"] and not result.unverified
    else:
        assert len(targets) == 2 and all(target.startswith("none: its weight is computed") for target in targets)
    _only_magnitudes_changed(model, loaded, MAGNITUDES.get(name))


@pytest.mark.parametrize("name", NORMS)
def test_fold_scales_weight_norm_through_g_and_leaves_spectral_norm_alone(name):
    """weight_norm's layers take every constant (through g, and the bias); constants that only a
    spectral-normalized layer could take are left out of the fold, with why. Either way the
    folded model computes the renorm-node model, and the user's model is untouched."""
    model = _normed_mlp(NORMS[name])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = _fixed(model, fold=True)
    assert result.fold_error < 1e-5
    if name in MAGNITUDES:
        assert not result.left_out
    else:
        assert result.left_out and all("spectral-normalized" in item["reason"] for item in result.left_out)
    _only_magnitudes_changed(model, result.folded.model, MAGNITUDES.get(name))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


class _Doubled(nn.Module):
    """A hook that changes what a layer returns: generated code cannot know it."""

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return 2 * output


def test_a_layer_with_another_hook_is_refused_and_fold_still_writes_its_weights(tmp_path):
    model = _normed_mlp(lambda layer: layer)
    model[2].register_forward_hook(_Doubled())
    with pytest.raises(CodeNotWritable, match="'2' has hooks"):
        write_fix(tmp_path / "nodes", _fixed(model), "test", force=False)
    assert not (tmp_path / "nodes").exists()
    missing = write_fix(tmp_path / "folded", _fixed(model, fold=True), "test", force=False)
    assert "'2' has hooks" in missing and (tmp_path / "folded" / FOLDED_FILE).is_file()


def test_a_bfloat16_model_is_written_as_one():
    """Layers are rebuilt in torch's default dtype; the written model takes each tensor's back."""
    model = _normed_mlp(lambda layer: layer).to(torch.bfloat16)
    result = _fixed(model)
    folder = export.Path(pytest.importorskip("tempfile").mkdtemp()) / "fixed"
    write_fix(folder, result, "test", force=False)
    loaded = load_target(str(folder)).model
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    x = torch.randn(16, 8, dtype=torch.bfloat16)
    torch.testing.assert_close(loaded.eval()(x), result.patched.eval()(x))


def test_generated_code_that_computes_something_else_is_not_written(tmp_path, monkeypatch):
    """The last guard: model.py's output is compared with the fixed model's before anything is
    written. A rebuilt layer that differs (a tanh written as a sigmoid, as a faulty constructor
    would) stops the write."""
    def faulty(path: str, module: nn.Module) -> str:
        return "torch.nn.Sigmoid()" if isinstance(module, nn.Tanh) else constructor(path, module)

    constructor = export.constructor
    monkeypatch.setattr(export, "constructor", faulty)
    with pytest.raises(InitlintError, match="computes something else"):
        write_fix(tmp_path / "fixed", _fixed(_normed_mlp(lambda layer: layer)), "test", force=False)
    assert not (tmp_path / "fixed").exists()

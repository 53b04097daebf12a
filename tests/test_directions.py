"""fix gives the layers it rescales orthogonal directions at their own norm (initlint.directions)."""

from __future__ import annotations

import torch
import torch.nn as nn

import initlint
from initlint.api import CheckOptions, ModelSource
from initlint.directions import orthogonal_like
from initlint.fixer import run_fix


def _tanh_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for width_in, width_out in [(16, 32), (32, 32), (32, 24)]:
        layers += [nn.Linear(width_in, width_out), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(24, 4))


def _gram_off_diagonal(weight: torch.Tensor) -> float:
    """How far the rows (or columns, when there are fewer) are from orthogonal and of one length:
    the largest entry of G / mean(diag G) - I."""
    flat = weight.detach().reshape(weight.shape[0], -1).double()
    gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
    return (gram / gram.diagonal().mean() - torch.eye(len(gram), dtype=gram.dtype)).abs().max().item()


def test_orthogonal_like_keeps_the_norm_and_draws_the_same_for_the_same_layer():
    weight = torch.randn(24, 32)
    drawn = orthogonal_like(weight, "body.1", seed=0)
    assert _gram_off_diagonal(drawn) < 1e-6
    torch.testing.assert_close(drawn.norm(), weight.norm())
    torch.testing.assert_close(drawn, orthogonal_like(weight, "body.1", seed=0))
    assert not torch.allclose(drawn, orthogonal_like(weight, "body.2", seed=0))


def test_rescaled_layers_are_orthogonal_and_the_folded_model_matches_the_renorm_nodes():
    """i.i.d. default weights have Gram entries of ~1/sqrt(fan) off the diagonal (0.2 here);
    orthogonal ones are exact to rounding."""
    model = _tanh_mlp()
    original = [layer.weight.detach().clone() for layer in model if isinstance(layer, nn.Linear)]
    assert min(_gram_off_diagonal(w) for w in original) > 0.1
    result = run_fix(model, (), CheckOptions(input_shapes=[(64, 16)]), ModelSource(), fold=True)
    redrawn = [r for r in result.plan if r.orthogonal is not None]
    assert len(redrawn) == 3  # the three body layers; the head is an output and keeps its weights
    for renorm in redrawn:
        assert _gram_off_diagonal(result.patched.get_submodule(renorm.module).weight) < 1e-5
        assert _gram_off_diagonal(result.folded.model.get_submodule(renorm.module).weight) < 1e-5
    assert result.fold_error < 1e-4
    for layer, weight in zip([m for m in model if isinstance(m, nn.Linear)], original):
        torch.testing.assert_close(layer.weight, weight)  # the user's model is untouched


def test_keep_directions_only_rescales_and_a_zero_initialized_layer_stays_zero():
    model = _tanh_mlp()
    nn.init.zeros_(model[2].weight)  # a branch zeroed on purpose (Fixup, SkipInit)
    kept = initlint.fix(model, keep_directions=True, fold=True, input_shapes=[(64, 16)])
    cosine = nn.functional.cosine_similarity(kept[0].weight.flatten(), model[0].weight.flatten(), dim=0)
    assert cosine.item() > 1 - 1e-6
    redrawn = initlint.fix(model, fold=True, input_shapes=[(64, 16)])
    assert redrawn[2].weight.abs().sum() == 0
    assert _gram_off_diagonal(redrawn[0].weight) < 1e-5

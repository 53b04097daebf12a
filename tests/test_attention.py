"""Softmax and attention statistics (IL203's numbers) against independent computations: the
definition of entropy, torch's own Categorical, scaled_dot_product_attention's and
nn.MultiheadAttention's own probabilities."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import initlint
from initlint.attention import attention_logits, multihead_logits, query_positions, softmax_logits
from initlint.graph import SignalGraph
from initlint.rules.saturated_attention import SaturatedAttention
from initlint.stats import SOFTMAX_ROWS, softmax_stats

INF = math.inf


def _entropy(probabilities: list[float]) -> float:
    return -sum(p * math.log(p) for p in probabilities if p > 0)


def test_rows_of_known_softmaxes():
    logits = torch.tensor([
        [0.0, math.log(3.0), -INF],  # p = 1/4, 3/4; the masked key does not count
        [0.0, 0.0, -INF],            # uniform over 2 keys
        [0.0, -INF, -INF],           # one key: left out
        [10.0, 0.0, 0.0],            # peaked: e^10 / (e^10 + 2) > 0.9
    ])
    stats = softmax_stats(logits)
    peaked = [math.exp(10) / (math.exp(10) + 2), 1 / (math.exp(10) + 2), 1 / (math.exp(10) + 2)]
    entropies = [_entropy([0.25, 0.75]), math.log(2), _entropy(peaked)]
    assert stats.rows == 3
    assert stats.entropy == pytest.approx(sum(entropies) / 3, rel=1e-5)
    assert stats.uniform_entropy == pytest.approx((2 * math.log(2) + math.log(3)) / 3, rel=1e-6)
    assert stats.peaked_fraction == pytest.approx(1 / 3)
    # within-row std (unbiased): ln 3 / sqrt(2), 0, and (10, 0, 0) has variance 100 / 3
    variances = [math.log(3) ** 2 / 2, 0.0, 100 / 3]
    assert stats.logit_std == pytest.approx(math.sqrt(sum(variances) / 3), rel=1e-5)


def test_gaussian_rows_match_categorical_entropy():
    logits = torch.randn(300, 50, generator=torch.Generator().manual_seed(0)) * 2.0
    stats = softmax_stats(logits)
    reference = torch.distributions.Categorical(logits=logits.double())
    assert stats.entropy == pytest.approx(reference.entropy().mean().item(), rel=1e-5)
    assert stats.peaked_fraction == pytest.approx((reference.probs.amax(-1) > 0.9).double().mean().item())
    assert stats.logit_std == pytest.approx(logits.double().var(dim=-1).mean().sqrt().item(), rel=1e-5)


def test_large_softmaxes_are_measured_on_a_subsample_of_rows():
    stats = softmax_stats(torch.randn(3 * SOFTMAX_ROWS, 8, generator=torch.Generator().manual_seed(0)))
    assert SOFTMAX_ROWS // 2 < stats.rows <= SOFTMAX_ROWS


def test_library_masks_count_as_masked_and_dim_moves_last():
    x = torch.zeros(2, 4, 3)
    x[:, 3] = torch.finfo(torch.float32).min  # how Hugging Face masks a key
    stats = softmax_stats(softmax_logits(x, dim=1))
    assert stats.entropy == pytest.approx(math.log(3), rel=1e-6) and stats.uniform_entropy == pytest.approx(math.log(3))


def test_default_threshold_sits_at_the_freezing_point_of_gaussian_logits():
    """Logits of std s over n keys: a healthy s = 1 stays well above ``min_entropy_ratio``;
    s = sqrt(2 ln n), where the softmax freezes onto a few keys, falls below it."""
    bound = SaturatedAttention.thresholds["min_entropy_ratio"]
    generator = torch.Generator().manual_seed(0)
    for keys in (32, 512):
        noise = torch.randn(4000, keys, generator=generator, dtype=torch.float64)
        ratio = {s: _categorical_entropy_ratio(noise * s) for s in (1.0, math.sqrt(2 * math.log(keys)))}
        assert ratio[1.0] > bound + 0.3 and ratio[math.sqrt(2 * math.log(keys))] < bound


def _categorical_entropy_ratio(logits: torch.Tensor) -> float:
    return torch.distributions.Categorical(logits=logits).entropy().mean().item() / math.log(logits.shape[-1])


def _probabilities_of_sdpa(query, key, **options) -> torch.Tensor:
    """scaled_dot_product_attention's own probabilities: with the identity as values, its
    output is its attention matrix."""
    value = torch.eye(key.shape[-2]).expand(*key.shape[:-1], key.shape[-2])
    return F.scaled_dot_product_attention(query, key, value, **options)


@pytest.mark.parametrize("shapes, options", [
    ((2, 4, 100, 7), {}), ((2, 4, 100, 7), {"is_causal": True}), ((2, 4, 100, 7), {"scale": 0.3}),
    ((2, 4, 100, 7), {"attn_mask": torch.rand(100, 7, generator=torch.Generator().manual_seed(1)) > 0.3}),
    ((2, 4, 100, 7), {"attn_mask": torch.randn(2, 1, 100, 7, generator=torch.Generator().manual_seed(2))}),
    ((2, 4, 100, 7), {"enable_gqa": True}),
    ((1, 1, 1500, 1500), {"is_causal": True}),  # 1500 queries: every 2nd is measured
], ids=["plain", "causal", "scale", "bool-mask", "float-mask", "gqa", "causal-subsampled"])
def test_attention_logits_give_sdpa_probabilities(shapes, options):
    batch, heads, queries, keys = shapes
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(batch, heads, queries, 8, generator=generator)
    key = torch.randn(batch, heads // 2 if options.get("enable_gqa") else heads, keys, 8, generator=generator)
    if "attn_mask" in options and options["attn_mask"].dtype == torch.bool:
        options["attn_mask"][:, 0] = True  # every query keeps a key: sdpa gives NaN otherwise
    logits = attention_logits(query, key, **options)
    positions = query_positions(queries, batch * heads)
    assert (len(positions) < queries) is (batch * heads * queries > SOFTMAX_ROWS)  # a sample only when needed
    expected = _probabilities_of_sdpa(query, key, **options)[..., positions, :]
    assert logits.shape == expected.shape
    torch.testing.assert_close(logits.softmax(dim=-1), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_logits_give_its_own_attention_weights(batch_first):
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(32, 4, batch_first=batch_first)
    query, key = torch.randn(3, 10, 32), torch.randn(3, 6, 32)
    if not batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[0, 4:] = True  # True: this key is left out
    mask = torch.zeros(10, 6, dtype=torch.bool)
    mask[:, 1] = True
    _, weights = attention(query, key, key, key_padding_mask=padding, attn_mask=mask, average_attn_weights=False)
    logits = multihead_logits(attention, (query, key, key), {"key_padding_mask": padding, "attn_mask": mask})
    torch.testing.assert_close(logits.softmax(dim=-1), weights.detach(), atol=1e-5, rtol=1e-4)


class _Attending(nn.Module):
    """Inputs times ``scale`` into an nn.MultiheadAttention, called as a layer (an fx leaf)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale, self.attention = scale, nn.MultiheadAttention(32, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale
        return self.attention(x, x, x)[0]


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_probe_measures_multihead_attention_as_its_weights_say(scale):
    torch.manual_seed(0)
    model = _Attending(scale)
    x = torch.randn(8, 32, 32)
    report = initlint.check(model, x, select=["IL203"])
    (measured,) = [v.softmax for v in report.graph.nodes.values() if v.softmax is not None]
    _, weights = model.attention(x * scale, x * scale, x * scale, average_attn_weights=False)
    weights = weights.detach()  # (batch, heads, queries, keys)
    reference = torch.distributions.Categorical(probs=weights[..., query_positions(32, 8 * 4), :].double())
    assert measured.entropy == pytest.approx(reference.entropy().mean().item(), rel=1e-3, abs=1e-4)
    assert ("IL203" in report.codes()) is (measured.entropy_ratio < SaturatedAttention.thresholds["min_entropy_ratio"])


class _NormThenAttention(nn.Module):
    """LayerNorm, then an attention and a Linear with no norm after them."""

    def __init__(self) -> None:
        super().__init__()
        self.norm, self.qkv, self.head = nn.LayerNorm(32), nn.Linear(32, 96), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        return self.head(F.scaled_dot_product_attention(q, k, v))


def test_the_body_runs_on_through_an_attention_after_the_last_norm():
    """A norm that an attention follows does not close the body: the attention is nonlinear."""
    graph: SignalGraph = initlint.check(_NormThenAttention(), torch.randn(8, 16, 32)).graph
    assert "attention" in graph.view("scaled_dot_product_attention").roles
    assert "scaled_dot_product_attention" in [v.name for v in graph.body()]
    assert not graph.normalized_before_nonlinearity("qkv")  # the attention reads it at its own scale


def test_thresholds_are_configurable():
    """An entropy ratio is never below 0 and a share never above 1: these bounds silence the
    rule and cap its severity, on the issue's model that is an error by default."""
    from initlint.rules.saturated_attention import default_table_times_sqrt_d

    def severities(**thresholds: float) -> list[str]:
        report = initlint.check(default_table_times_sqrt_d(), select=["IL203"], thresholds={"IL203": thresholds})
        return [f.severity for f in report.findings]

    assert severities() == ["error"]
    assert severities(error_peaked_fraction=1.0) == ["warning"]
    assert severities(min_entropy_ratio=0.0) == []

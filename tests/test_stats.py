"""NodeStats against independent computations (numpy) and against theory for known inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from initlint.stats import std_of, tensor_stats


def test_matches_numpy_on_random_tensor():
    x = torch.randn(16, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 2 + torch.linspace(-3, 3, 75).reshape(3, 5, 5)
    x[0, 0, 0, :3] = 0
    stats = tensor_stats(x, batch_size=16)
    a = x.numpy().reshape(16, -1).astype(np.float64)
    assert stats.shape == [16, 3, 5, 5]
    assert stats.mean == pytest.approx(a.mean(), rel=1e-5)
    assert stats.std == pytest.approx(a.std(ddof=1), rel=1e-5)
    assert stats.zero_fraction == pytest.approx((a == 0).mean())
    sample_var = a.var(axis=0, ddof=1).mean()
    assert stats.sample_std == pytest.approx(math.sqrt(sample_var), rel=1e-5)
    offset_var = a.mean(axis=0).var() - sample_var / 16
    assert stats.offset_std == pytest.approx(math.sqrt(offset_var), rel=1e-4)


def test_split_separates_signal_from_constant_offsets():
    """x[n, f] = a_f + s * z[n, f]: the sample part is s, the offset part is std(a)."""
    g = torch.Generator().manual_seed(1)
    offsets = torch.randn(4096, generator=g) * 3.0
    x = offsets + 0.5 * torch.randn(64, 4096, generator=g)
    stats = tensor_stats(x, batch_size=64)
    # 64 x 4096 samples: the relative standard error of both estimates is well under 2 %
    assert stats.sample_std == pytest.approx(0.5, rel=0.02)
    assert stats.offset_std == pytest.approx(offsets.std().item(), rel=0.02)


def test_white_noise_has_no_offset_part():
    """Without the 1/N correction, the per-feature means of 8 samples would show std 1/sqrt(8)."""
    x = torch.randn(8, 100_000, generator=torch.Generator().manual_seed(2))
    stats = tensor_stats(x, batch_size=8)
    assert stats.offset_std < 0.05
    assert stats.sample_std == pytest.approx(1.0, rel=0.01)


def test_nonfinite_values_are_counted_and_excluded():
    x = torch.tensor([[1.0, float("nan")], [3.0, float("inf")]])
    stats = tensor_stats(x, batch_size=2)
    assert stats.nonfinite == 2
    assert stats.mean == pytest.approx(2.0)
    assert stats.sample_std is None


def test_no_split_without_a_batch_dimension():
    assert tensor_stats(torch.randn(5), batch_size=8).sample_std is None


def test_dead_fraction_counts_features_that_are_zero_for_every_sample():
    """ReLU of 3 features with bias -100 (dead) out of 8; the rest are active in some sample."""
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(2))
    x[:, :3] -= 100
    stats = tensor_stats(torch.relu(x), batch_size=16)
    a = torch.relu(x).numpy()
    assert stats.dead_fraction == pytest.approx((a == 0).all(axis=0).mean()) == pytest.approx(3 / 8)


@pytest.mark.parametrize("rows", [16, 300])
def test_zero_counts_agree_with_numpy_on_both_sides_of_the_byte_count(rows):
    """Up to 255 rows the per-feature zeros are counted in bytes; 300 rows take the int64 path."""
    x = torch.relu(torch.randn(rows, 40, generator=torch.Generator().manual_seed(3)))
    x[:, :5] = 0
    x[1, 7] = float("-0.0")
    stats = tensor_stats(x, batch_size=rows)
    a = x.numpy()
    assert stats.zero_fraction == pytest.approx((a == 0).mean(), rel=1e-6)
    assert stats.dead_fraction == pytest.approx((a == 0).all(axis=0).mean()) == pytest.approx(5 / 40)


@pytest.mark.parametrize("mean", [0.0, 3.0, 1e4])
def test_std_of_matches_float64_even_when_the_mean_dwarfs_the_spread(mean):
    """At mean 1e4 and spread 1e-2 the one-pass sums cancel completely; the guard must hand over
    to the two-pass std. 1e-4 is the guard's bound on the one-pass error."""
    x = mean + 1e-2 * torch.randn(100_000, generator=torch.Generator().manual_seed(4))
    expected = x.double().std().item()
    assert std_of(x) == pytest.approx(expected, rel=1e-4)
    assert std_of(torch.ones(1)) is None


def test_large_tensors_are_measured_on_a_sample_within_its_standard_error():
    """2.4M elements: sampled down to SAMPLE_ELEMENTS. Each statistic must be within four
    standard errors of the whole tensor's (computed in float64 by numpy) for a sample of that
    size: a std within 4 * sqrt((kurtosis - 1) / 4n), fractions within 4 * sqrt(p(1-p)/n); a NaN anywhere in the
    tensor, outside the sample, is still found and counted exactly; and the draw is the same
    on every call."""
    from initlint.stats import SAMPLE_ELEMENTS

    x = torch.relu(torch.randn(4, 600_000, generator=torch.Generator().manual_seed(5)) + 0.3)
    x[:, :150_000] = 0
    stats = tensor_stats(x, batch_size=4)
    a = x.numpy().astype(np.float64)
    n, features = SAMPLE_ELEMENTS, SAMPLE_ELEMENTS // 4
    kurtosis = ((a - a.mean()) ** 4).mean() / a.var() ** 2
    std_tolerance = 4 * math.sqrt((kurtosis - 1) / (4 * n))
    assert stats.std == pytest.approx(a.std(ddof=1), rel=std_tolerance)
    assert stats.sample_std == pytest.approx(math.sqrt(a.var(axis=0, ddof=1).mean()), rel=std_tolerance)
    zero, dead = (a == 0).mean(), (a == 0).all(axis=0).mean()
    assert abs(stats.zero_fraction - zero) < 4 * math.sqrt(zero * (1 - zero) / features)
    assert abs(stats.dead_fraction - dead) < 4 * math.sqrt(dead * (1 - dead) / features)
    assert std_of(x) == pytest.approx(a.std(ddof=1), rel=std_tolerance)
    assert tensor_stats(x, batch_size=4) == stats
    x[2, 599_999] = float("nan")
    assert tensor_stats(x, batch_size=4).nonfinite == 1
    assert math.isnan(std_of(x))

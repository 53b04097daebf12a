"""Per-tensor statistics: the numbers every rule reads.

Beside mean and std, the variance is split in two parts, because a total std hides what matters:
the *across-sample* part (how much the value depends on the input, i.e. the signal) and the
*offset* part (per-feature constants that are the same for every sample, e.g. a bias or the mean
of a sigmoid). Dim 0 is the batch; every other position is a "feature".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


ROUNDING_MARGIN = 32
"""Machine epsilons of a value's rms that its across-sample std must exceed to count as measured:
50 to 100 times the std of float rounding. The signal of examples/deep_sigmoid_mlp.py falls
below it after 7 layers; two layers further, ratios of what is left come out 1.2 to 3x off."""


@dataclass
class NodeStats:
    shape: list[int]
    dtype: str
    mean: float
    std: float
    zero_fraction: float
    nonfinite: int
    sample_std: float | None
    """sqrt of the mean over features of the unbiased across-sample variance."""
    offset_std: float | None
    """sqrt of the variance over features of per-feature means, less the sampling noise of those means."""
    saturated_fraction: float | None = None
    """For a saturating activation: share of its inputs where its slope is under 10 % of its maximum."""
    grad_std: float | None = None
    """Std of d(loss)/d(this value) for a Gaussian cotangent at the outputs; set by the backward pass."""
    dead_fraction: float | None = None
    """Share of features (positions after the batch dim) that are exactly 0 for every sample."""

    def to_dict(self) -> dict:
        return asdict(self)

    def signal_resolved(self) -> bool:
        """Whether the across-sample std stands clear of float rounding; below that, ratios of
        what is left are rounding noise."""
        if self.sample_std is None:
            return False
        rms = math.hypot(self.mean, self.std)
        return self.sample_std > ROUNDING_MARGIN * torch.finfo(getattr(torch, self.dtype)).eps * rms


def tensor_stats(x: torch.Tensor, batch_size: int | None) -> NodeStats:
    """Measure ``x``; the across-sample split needs dim 0 to be the probe batch (and 2+ samples).

    The offset part subtracts ``sample_var / N``, the expected variance of a mean of N samples,
    so white noise has an offset std of 0 in expectation rather than ``1/sqrt(N)``.
    """
    x = x.detach()
    finite = torch.isfinite(x)
    nonfinite = int(x.numel() - finite.sum().item())
    values = x.float()
    if nonfinite:
        values = values[finite]
    n = values.numel()
    mean = values.mean().item() if n else math.nan
    std = values.std().item() if n > 1 else math.nan
    zero = (x == 0).float().mean().item() if x.numel() else math.nan
    sample_std = offset_std = dead_fraction = None
    if not nonfinite and batch_size and batch_size > 1 and x.dim() >= 1 and x.shape[0] == batch_size:
        flat = x.float().reshape(batch_size, -1)
        sample_var = flat.var(dim=0).mean()
        offset_var = flat.mean(dim=0).var(unbiased=False) - sample_var / batch_size
        sample_std = math.sqrt(sample_var.item())
        offset_std = math.sqrt(max(offset_var.item(), 0.0))
        dead_fraction = (flat == 0).all(dim=0).float().mean().item()
    return NodeStats(
        shape=list(x.shape),
        dtype=str(x.dtype).removeprefix("torch."),
        mean=mean,
        std=std,
        zero_fraction=zero,
        nonfinite=nonfinite,
        sample_std=sample_std,
        offset_std=offset_std,
        dead_fraction=dead_fraction,
    )

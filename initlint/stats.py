"""Per-tensor statistics: the numbers every rule reads.

Beside mean and std, the variance is split in two parts, because a total std hides what matters:
the *across-sample* part (how much the value depends on the input, i.e. the signal) and the
*offset* part (per-feature constants that are the same for every sample, e.g. a bias or the mean
of a sigmoid). Dim 0 is the batch; every other position is a "feature".
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import torch


ROUNDING_MARGIN = 32
"""Machine epsilons of a value's rms that its across-sample std must exceed to count as measured:
50 to 100 times the std of float rounding. The signal of examples/deep_sigmoid_mlp.py falls
below it after 7 layers; two layers further, ratios of what is left come out 1.2 to 3x off."""


PEAKED_PROBABILITY = 0.9
"""A softmax row counts as peaked (near one-hot) when its largest probability exceeds this."""
SOFTMAX_ROWS = 1024
"""At most this many rows of a softmax are measured, evenly strided: the share of peaked rows is
then within 3 % of all rows' (2 standard errors), and a whole softmax costs no more than it."""


@dataclass
class SoftmaxStats:
    """How far a softmax's rows are from uniform. Rows with fewer than 2 keys (a causal
    mask's first query) say nothing and are left out; masked keys (-inf logits) do not count."""

    entropy: float
    """Mean row entropy, in nats."""
    uniform_entropy: float
    """Mean over the same rows of log(keys): what uniform attention would have."""
    logit_std: float
    """sqrt of the mean within-row variance of the logits (a row's offset does not change a softmax)."""
    peaked_fraction: float
    """Share of rows whose largest probability exceeds ``PEAKED_PROBABILITY``."""
    rows: int
    """Rows measured (a subsample, see ``SOFTMAX_ROWS`` and ``initlint.attention``)."""
    count: int = 1
    """Softmaxes measured in the node (a leaf module may hold several); the stats are the most peaked one's."""

    @property
    def entropy_ratio(self) -> float:
        """Entropy as a share of uniform attention's: 1 is uniform, 0 one-hot."""
        return self.entropy / self.uniform_entropy

    def to_dict(self) -> dict:
        return {**asdict(self), "entropy_ratio": self.entropy_ratio}


def sampled_rows(logits: torch.Tensor) -> torch.Tensor:
    """At most ``SOFTMAX_ROWS`` evenly strided rows of ``logits`` (..., keys), as a matrix."""
    rows = logits.detach().reshape(-1, logits.shape[-1]) if logits.dim() else logits.detach().reshape(1, 1)
    return rows[:: -(-rows.shape[0] // SOFTMAX_ROWS)]


def softmax_stats(logits: torch.Tensor) -> SoftmaxStats | None:
    """Row statistics of ``softmax(logits, dim=-1)``, with -inf marking masked keys; None when
    no row has 2 keys. The logit std comes from the logits, not from log-probabilities: a
    saturated row's probabilities underflow to 0, its logits stay exact."""
    rows = sampled_rows(logits).float()
    keep = torch.isfinite(rows)
    counts = keep.sum(dim=-1)
    probabilities = rows.softmax(dim=-1)
    entropy = torch.special.entr(probabilities).sum(dim=-1)  # entr(0) = 0: masked keys add nothing
    finite = torch.where(keep, rows, 0.0)
    row_mean = finite.sum(dim=-1) / counts
    row_var = torch.where(keep, finite - row_mean[:, None], 0.0).square().sum(dim=-1) / (counts - 1)
    peaked = probabilities.amax(dim=-1) > PEAKED_PROBABILITY
    used = counts >= 2
    measured = [entropy[used].mean(), counts[used].float().log().mean(), row_var[used].mean().sqrt(),
                peaked[used].float().mean(), used.sum()]
    entropy_value, uniform, logit_std, peaked_share, used_rows = torch.stack(measured).tolist()  # one sync
    if not used_rows:
        return None
    return SoftmaxStats(entropy_value, uniform, logit_std, peaked_share, int(used_rows))


def most_peaked(found: list[SoftmaxStats]) -> SoftmaxStats | None:
    """Of several softmaxes in one node, the one furthest from uniform, counting them all."""
    if not found:
        return None
    worst = min(found, key=lambda s: s.entropy_ratio)
    worst.count = len(found)
    return worst


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

    Few passes over the tensor: per-feature means, then the squared deviations from them (two
    passes, so a tiny signal under a large mean keeps its precision), from which the total
    variance follows exactly; then the zeros, counted per feature so one pass gives both the
    zero and the dead fraction. A large tensor is measured on a random choice of its features
    (``_sampled``), so that these passes cost little beside the operator that made it; any
    NaN or Inf shows in the sum of the whole tensor, and only then is the tensor masked
    (``_with_nonfinite``).
    """
    x = x.detach()
    if x.numel() == 0:
        return _with_nonfinite(x)
    split = bool(batch_size and batch_size > 1 and x.dim() >= 1 and x.shape[0] == batch_size)
    whole = x.reshape(batch_size, -1) if split else x.reshape(-1, 1)
    flat = _sampled(whole, dim=1 if split else 0).float()
    rows, columns = flat.shape
    column_mean = flat.mean(dim=0)
    within_squares = (flat - column_mean).square_().sum()
    column_zeros = _zeros_per_feature(flat)
    mean = column_mean.mean()
    total_squares = within_squares + rows * (column_mean - mean).square().sum()
    n = rows * columns
    finite_check = total_squares + (0 if flat.numel() == whole.numel() else whole.sum(dtype=torch.float32))
    measured = [finite_check, mean, (total_squares / max(n - 1, 1)).sqrt(), column_zeros.sum() / n]
    if split:
        sample_var = within_squares / ((rows - 1) * columns)
        offset_var = column_mean.var(unbiased=False) - sample_var / rows
        measured += [sample_var.sqrt(), offset_var.clamp_min(0).sqrt(), (column_zeros == rows).float().mean()]
    total, mean_value, std, zero_fraction, *split_values = torch.stack(measured).tolist()  # one sync
    if not math.isfinite(total):
        return _with_nonfinite(x)
    sample_std, offset_std, dead_fraction = split_values or (None, None, None)
    return NodeStats(
        shape=list(x.shape),
        dtype=str(x.dtype).removeprefix("torch."),
        mean=mean_value,
        std=std if n > 1 else math.nan,
        zero_fraction=zero_fraction,
        nonfinite=0,
        sample_std=sample_std,
        offset_std=offset_std,
        dead_fraction=dead_fraction,
    )


def std_of(x: torch.Tensor) -> float | None:
    """The unbiased std of all of ``x`` (of a random sample of it, when large: ``_sampled``),
    from its sum and sum of squares: half the time of ``Tensor.std`` (Welford). Where the mean
    dwarfs the spread those sums cancel, and the exact two-pass ``std`` decides."""
    if x.numel() < 2:
        return None
    whole = x.detach().reshape(-1)
    flat = _sampled(whole, dim=0).float()
    n = flat.numel()
    measured = [flat.sum(), flat.square().sum()]
    if n < whole.numel():  # NaN or Inf anywhere shows in the whole tensor's sum
        measured.append(whole.sum(dtype=torch.float32))
    total, squares, *whole_sum = torch.stack(measured).tolist()  # one sync
    if whole_sum and not math.isfinite(whole_sum[0]):
        return whole.float().std().item()
    variance = (squares - total * total / n) / (n - 1)
    if not variance > CANCELLATION_GUARD * squares / n:  # NaN too: std gives NaN or Inf itself
        return flat.std().item()
    return math.sqrt(variance)


CANCELLATION_GUARD = 1e-2
"""Below this share of the mean square, the float32 sums (each off by up to ~1e-6 of itself)
could leave the variance more than 1e-4 off; the two-pass std takes over."""


SAMPLE_ELEMENTS = 1 << 17
"""Elements a tensor's statistics are measured on, at most (twice that is measured whole). Two
standard errors of the std of 2^17 independent Gaussian values are 0.4 % of it; those of the
zero fraction are under 0.3 points, and of the dead fraction (over 2^17 / batch features) under
0.8 points up to a batch of 32. Every rule's threshold is a factor or tens of points away. Measuring all of a
(8, 128, 2048) activation took 30 elementwise operations' time, so the probe of a transformer
cost more than its training step."""


def _sampled(flat: torch.Tensor, dim: int) -> torch.Tensor:
    """``flat`` itself when it is small; else a random choice of its slices along ``dim``
    (columns, i.e. features, or elements), about ``SAMPLE_ELEMENTS`` values in all. The draw
    depends only on the shape, so a report is the same on every run."""
    length = flat.shape[dim]
    keep = max(1, SAMPLE_ELEMENTS * length // flat.numel())
    if length <= 2 * keep:
        return flat
    return flat.index_select(dim, _chosen(length, keep, flat.device))


@functools.lru_cache(maxsize=256)
def _chosen(length: int, keep: int, device: torch.device) -> torch.Tensor:
    """``keep`` of ``range(length)``, drawn once per size and sorted, so that gathering them
    reads memory in order: a model's many same-sized values share one draw."""
    generator = torch.Generator(device=device).manual_seed(length)
    return torch.randint(length, (keep,), generator=generator, device=device).sort().values


def _zeros_per_feature(flat: torch.Tensor) -> torch.Tensor:
    """How many rows are exactly 0 in each column. Counted in bytes while a count fits one:
    summing the bool mask into int64 converts the whole mask first, 25x slower on ResNet-50.
    ``logical_not`` is ``== 0`` (NaN included) at half the cost of comparing with a scalar."""
    zeros = flat.logical_not()
    if flat.shape[0] <= torch.iinfo(torch.uint8).max:
        return zeros.view(torch.uint8).sum(dim=0, dtype=torch.uint8)
    return zeros.sum(dim=0)


def _with_nonfinite(x: torch.Tensor) -> NodeStats:
    """Mean and std of the finite values; no split, since a NaN makes every feature suspect."""
    finite = torch.isfinite(x)
    values = x.float()[finite]
    n = values.numel()
    return NodeStats(
        shape=list(x.shape),
        dtype=str(x.dtype).removeprefix("torch."),
        mean=values.mean().item() if n else math.nan,
        std=values.std().item() if n > 1 else math.nan,
        zero_fraction=(x == 0).float().mean().item() if x.numel() else math.nan,
        nonfinite=int(x.numel() - n),
        sample_std=None,
        offset_std=None,
    )

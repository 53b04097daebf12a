"""The logits a softmax normalizes, from the arguments of the node or module that computes it.

A softmax node has its logits as input. Attention's probabilities are often no node at all:
``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention`` compute them inside. Their logits
are recomputed here from the query, the key, the mask and the scale, for a subsample of query
positions (``query_positions``: evenly spaced, in every batch element and head, about
``stats.SOFTMAX_ROWS`` rows in all): row statistics settle on far fewer rows than a model has,
at a fraction of the attention's own cost.
Masked keys come out as -inf, the convention of ``stats.softmax_stats``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from initlint.stats import SOFTMAX_ROWS, SoftmaxStats, sampled_rows, softmax_stats

_SDPA_ARGUMENTS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
"""``F.scaled_dot_product_attention``'s parameters, which the ATen operator shares."""
_MHA_ARGUMENTS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")


def masked_as_inf(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` in float32, with masked entries -inf. Libraries mask by adding their dtype's
    most negative number (Hugging Face's ``finfo.min``) as often as with -inf; either counts."""
    masked = logits <= torch.finfo(logits.dtype).min / 2
    return logits.float().masked_fill(masked, -math.inf)


def softmax_logits(x: torch.Tensor, dim: int | None) -> torch.Tensor:
    """The logits of ``softmax(x, dim)`` as rows (a sample, ``stats.sampled_rows``).
    ``dim=None`` is ``F.softmax``'s legacy choice (0 for 0-, 1- and 3-dim inputs, else 1)."""
    if dim is None:
        dim = 0 if x.dim() in (0, 1, 3) else 1
    return masked_as_inf(sampled_rows(x.movedim(dim, -1) if x.dim() else x))


def query_positions(length: int, sequences: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Evenly spaced positions of ``sequences`` queries (batch elements times heads) of
    ``length``: enough for about ``SOFTMAX_ROWS`` rows in all, and at least 8 per sequence."""
    wanted = max(8, SOFTMAX_ROWS // max(sequences, 1))
    return torch.arange(0, length, -(-length // wanted), device=device)


def attention_logits(
    query: torch.Tensor, key: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False,
    scale: float | None = None, enable_gqa: bool = False,
) -> torch.Tensor:
    """``query @ key^T * scale`` plus the mask, as ``F.scaled_dot_product_attention`` computes
    them, for a subsample of query positions (``query_positions``)."""
    positions = query_positions(query.shape[-2], math.prod(query.shape[:-2]), query.device)
    return _logits_at(query[..., positions, :], key, positions, attn_mask, is_causal, scale, enable_gqa)


def _logits_at(
    query: torch.Tensor, key: torch.Tensor, positions: torch.Tensor, attn_mask: torch.Tensor | None = None,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> torch.Tensor:
    """The logits of the queries at ``positions`` (``query`` holds those only): a bool mask
    marks the keys that take part, a float one is added, ``is_causal`` is the top-left lower
    triangle."""
    query, key = query.float(), key.float()
    if enable_gqa and key.dim() >= 3 and key.shape[-3] != query.shape[-3]:
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], dim=-3)
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    logits = query @ key.transpose(-2, -1) * scale
    if is_causal:
        logits = logits.masked_fill(positions[:, None] < torch.arange(key.shape[-2], device=key.device), -math.inf)
    if attn_mask is not None:
        mask = attn_mask[..., positions, :] if attn_mask.dim() >= 2 and attn_mask.shape[-2] > 1 else attn_mask
        logits = logits.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else logits + masked_as_inf(mask)
    return logits


def sdpa_logits(args: tuple, kwargs: dict) -> torch.Tensor:
    """The logits of a ``scaled_dot_product_attention`` call (functional or ATen)."""
    bound = {**dict(zip(_SDPA_ARGUMENTS, args)), **kwargs}
    return attention_logits(bound["query"], bound["key"], bound.get("attn_mask"), bool(bound.get("is_causal")),
                            bound.get("scale"), bool(bound.get("enable_gqa")))


def _additive(mask: torch.Tensor | None) -> torch.Tensor | None:
    """An ``nn.MultiheadAttention`` mask as one to add: there, ``True`` marks a key left out."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, device=mask.device).masked_fill(mask, -math.inf)


def multihead_logits(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> torch.Tensor:
    """The logits of a call of ``module``, per head: its query (at ``query_positions`` only)
    and key projections, its ``attn_mask`` and ``key_padding_mask``. ``bias_k`` and
    ``add_zero_attn`` add a key each; they are left out."""
    bound = {**dict(zip(_MHA_ARGUMENTS, args)), **kwargs}
    query, key = bound["query"], bound["key"]
    width, heads = module.embed_dim, module.num_heads
    if query.dim() == 2:  # unbatched
        query, key = query.unsqueeze(0), key.unsqueeze(0)
    elif not module.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    positions = query_positions(query.shape[1], query.shape[0] * heads, query.device)
    if module._qkv_same_embed_dim:
        query_weight, key_weight = module.in_proj_weight[:width], module.in_proj_weight[width:2 * width]
    else:
        query_weight, key_weight = module.q_proj_weight, module.k_proj_weight
    bias = module.in_proj_bias
    query_bias, key_bias = (None, None) if bias is None else (bias[:width], bias[width:2 * width])
    q = F.linear(query[:, positions], query_weight, query_bias).unflatten(-1, (heads, -1)).transpose(1, 2)
    k = F.linear(key, key_weight, key_bias).unflatten(-1, (heads, -1)).transpose(1, 2)
    mask, padding = _additive(bound.get("attn_mask")), _additive(bound.get("key_padding_mask"))
    if mask is not None and mask.dim() == 3:  # (batch * heads, queries, keys)
        mask = mask.unflatten(0, (-1, heads))
    if padding is not None:
        padding = padding.reshape(padding.shape[0], 1, 1, -1) if padding.dim() == 2 else padding
        mask = padding if mask is None else mask + padding
    return _logits_at(q, k, positions, mask)


@torch.no_grad()
def of_softmax(x: torch.Tensor, dim: int | None) -> SoftmaxStats | None:
    """The row statistics of ``softmax(x, dim)``. Like the two below, out of autograd: the
    probe's backward pass never sees it."""
    return softmax_stats(softmax_logits(x, dim))


@torch.no_grad()
def of_sdpa(args: tuple, kwargs: dict) -> SoftmaxStats | None:
    """The row statistics of a ``scaled_dot_product_attention`` call's probabilities."""
    return softmax_stats(sdpa_logits(args, kwargs))


@torch.no_grad()
def of_multihead(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> SoftmaxStats | None:
    """The row statistics of the probabilities of a call of ``module``."""
    return softmax_stats(multihead_logits(module, args, kwargs))


def contains_attention(module: nn.Module) -> bool:
    return any(isinstance(m, nn.MultiheadAttention) for m in module.modules())


@contextlib.contextmanager
def attention_inside(module: nn.Module) -> Iterator[list[SoftmaxStats]]:
    """While it is open, each call of an ``nn.MultiheadAttention`` in ``module`` (itself, or
    inside a leaf such as ``nn.TransformerEncoderLayer``) adds its statistics to the list."""
    found: list[SoftmaxStats] = []

    def record(attention: nn.MultiheadAttention, args: tuple, kwargs: dict) -> None:
        stats = of_multihead(attention, args, kwargs)
        if stats is not None:
            found.append(stats)

    handles = [m.register_forward_pre_hook(record, with_kwargs=True)
               for m in module.modules() if isinstance(m, nn.MultiheadAttention)]
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()

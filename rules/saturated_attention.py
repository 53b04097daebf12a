"""IL203 saturated-attention."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn

from initlint.graph import SignalGraph
from initlint.rule import Example, Finding, Rule
from initlint.rules._models import ATTENTION_HEADS, ATTENTION_WIDTH, SelfAttention, TokenEncoder
from initlint.stats import PEAKED_PROBABILITY


def default_table_times_sqrt_d() -> nn.Module:
    """nn.Embedding's default N(0, 1) table times sqrt(128) into an nn.TransformerEncoderLayer:
    embeddings of std 11.3, attention logits of std ~65, entropy ~0.07 nats against 3.47."""
    torch.manual_seed(0)
    return TokenEncoder()


def default_table_into_scaled_dot_product() -> nn.Module:
    """The same embedding into a self-attention through F.scaled_dot_product_attention."""
    torch.manual_seed(0)
    return TokenEncoder(attention=SelfAttention("function"))


def default_table_into_explicit_softmax() -> nn.Module:
    """The same embedding into softmax(q @ k^T / sqrt(d)) @ v, written out."""
    torch.manual_seed(0)
    return TokenEncoder(attention=SelfAttention("written_out"))


def transformer_table() -> nn.Module:
    """A table initialised N(0, 1/128), times sqrt(128): embeddings of std 1."""
    torch.manual_seed(0)
    return TokenEncoder(table_std=ATTENTION_WIDTH**-0.5)


def transformer_table_into_scaled_dot_product() -> nn.Module:
    """The N(0, 1/128) table into the F.scaled_dot_product_attention block."""
    torch.manual_seed(0)
    return TokenEncoder(table_std=ATTENTION_WIDTH**-0.5, attention=SelfAttention("function"))


def transformer_table_into_explicit_softmax() -> nn.Module:
    """The N(0, 1/128) table into the written-out softmax attention."""
    torch.manual_seed(0)
    return TokenEncoder(table_std=ATTENTION_WIDTH**-0.5, attention=SelfAttention("written_out"))


def layer_norm_before_attention() -> nn.Module:
    """The default table times sqrt(128), through a LayerNorm before the attention."""
    torch.manual_seed(0)
    return TokenEncoder(norm_first=True)


def default_encoder_layer() -> nn.Module:
    """A default nn.TransformerEncoderLayer(128, 8) on N(0, 1) inputs."""
    torch.manual_seed(0)
    return nn.TransformerEncoderLayer(ATTENTION_WIDTH, ATTENTION_HEADS, batch_first=True)


class SaturatedAttention(Rule):
    """A softmax or an attention is nearly one-hot at init: its rows' entropy is far below uniform.

    What it does:
    For each softmax (``F.softmax``, ``torch.softmax``, ``x.softmax``, ``nn.Softmax``, ATen's
    ``_softmax``) and each attention (``F.scaled_dot_product_attention``, whose probabilities
    are recomputed from its query, key, mask and scale for up to 64 evenly spaced query
    positions; ``nn.MultiheadAttention``, also inside a module such as
    ``nn.TransformerEncoderLayer``, where the most peaked is reported), measures the mean row
    entropy against uniform attention's log(keys), the within-row std of the logits and the
    share of rows whose largest probability exceeds 0.9. Masked keys do not count; rows with
    fewer than 2 keys are left out. Flags it when the entropy is below ``min_entropy_ratio``
    of uniform.

    Why is this bad?
    A row that puts all its weight on one key passes on one value and has a softmax Jacobian
    p (1 - p) near 0: the query and key projections get almost no gradient, and the attention
    pattern it starts with is the one it keeps. For logits of std s over n keys the entropy
    is about ln n - s^2 / 2 until s reaches sqrt(2 ln n), where the softmax freezes onto a few
    keys (the random energy model). Measured with Gaussian logits: at s = 1 (queries and keys
    of unit scale, divided by sqrt(d_head)) the entropy is 0.87 of uniform for n = 32 and 0.92
    for n = 512; at s = sqrt(2 ln n) it is 0.48 and 0.39.

    Example:
    ``nn.Embedding(1000, 128)`` with its default N(0, 1) table, multiplied by ``sqrt(128)``
    as the Transformer's code does for its N(0, 1/d_model) table, feeding a post-LayerNorm
    ``nn.TransformerEncoderLayer``: embeddings of std 11.3, logits of std 65, entropy 0.07
    nats against 3.47 for uniform attention over 32 tokens, 91 % of rows above 0.9.

    Fix:
    Give attention inputs of unit scale: initialize a table N(0, 1/d_model) before multiplying
    it by ``sqrt(d_model)`` (or drop the factor), or put a LayerNorm before the attention
    (pre-LN); divide the logits by ``sqrt(d_head)``; keep query and key projections at
    fan-in scale.

    Thresholds: ``min_entropy_ratio`` (0.5) is the share of uniform attention's entropy
    below which it triggers; beyond ``error_peaked_fraction`` (0.5), the share of rows whose
    largest probability exceeds 0.9, the finding is an error.
    """

    code = "IL203"
    name = "saturated-attention"
    thresholds = {"min_entropy_ratio": 0.5, "error_peaked_fraction": 0.5}
    needs_structure = True  # the probe measures softmax rows on a captured graph only, not through hooks
    flagged = [
        Example(default_table_times_sqrt_d), Example(default_table_into_scaled_dot_product),
        Example(default_table_into_explicit_softmax),
    ]
    clean = [
        Example(transformer_table), Example(transformer_table_into_scaled_dot_product),
        Example(transformer_table_into_explicit_softmax), Example(layer_norm_before_attention),
        Example(default_encoder_layer, ((8, 32, ATTENTION_WIDTH),)),
    ]

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        for view in graph.nodes.values():
            stats = view.softmax
            if stats is None or stats.entropy_ratio >= self.limits["min_entropy_ratio"]:
                continue
            what = "softmax" if view.kind.name == "softmax" else "attention"
            several = f" (the most peaked of {stats.count} in this module)" if stats.count > 1 else ""
            yield self.finding(
                view, "error" if stats.peaked_fraction > self.limits["error_peaked_fraction"] else "warning",
                f"this {what}{several} is nearly one-hot at init: its rows' entropy is {stats.entropy:.3g} nats "
                f"against {stats.uniform_entropy:.3g} for uniform ({stats.entropy_ratio:.0%}), "
                f"{stats.peaked_fraction:.0%} of rows put more than {PEAKED_PROBABILITY} on one key, and its "
                f"logits have std {stats.logit_std:.3g}. Give it inputs of unit scale (a LayerNorm before it, "
                "an embedding table N(0, 1/d_model) when multiplied by sqrt(d_model)) and scale the logits "
                "by 1/sqrt(d_head)",
                entropy=stats.entropy, uniform_entropy=stats.uniform_entropy, entropy_ratio=stats.entropy_ratio,
                logit_std=stats.logit_std, peaked_fraction=stats.peaked_fraction, rows=stats.rows,
                softmaxes=stats.count,
            )

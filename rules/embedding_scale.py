"""IL104 embedding-scale."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn as nn

from initlint import ops
from initlint.graph import NodeView, SignalGraph
from initlint.rule import Example, Finding, Rule
from initlint.rules._models import SelfAttention, TokenEncoder

_VOCAB, _WIDTH = 1000, 64
_ONWARD = frozenset({ops.MUL, ops.DROPOUT, ops.ADD})
"""Ops applied straight to an embedding whose result, not the embedding's own output, is what the
next layers read: a scale (``* sqrt(d)``), dropout, a sum with other tables (token + position)."""


class _TokenMLP(nn.Module):
    """Embedding, optionally times ``scale`` or plus a zero-initialised position table, into
    Linear -> ReLU -> Linear."""

    def __init__(self, table_std: float, scale: float | None = None, positions: int = 0) -> None:
        super().__init__()
        self.embed = nn.Embedding(_VOCAB, _WIDTH)
        nn.init.normal_(self.embed.weight, std=table_std)
        self.scale = scale
        self.positions = nn.Embedding(positions, _WIDTH) if positions else None
        if self.positions is not None:
            nn.init.zeros_(self.positions.weight)
        self.mlp = nn.Sequential(nn.Linear(_WIDTH, _WIDTH), nn.ReLU(), nn.Linear(_WIDTH, _VOCAB))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        if self.scale is not None:
            x = x * self.scale
        if self.positions is not None:
            x = x + self.positions(torch.arange(ids.shape[1], device=ids.device))
        return self.mlp(x)


def gpt2_table_into_mlp() -> nn.Module:
    """A table initialised N(0, 0.02^2) as in GPT-2, read by a Linear with no LayerNorm before it."""
    torch.manual_seed(0)
    return _TokenMLP(0.02)


def default_table_times_sqrt_d() -> nn.Module:
    """nn.Embedding's default N(0, 1) table multiplied by sqrt(64) = 8, the Transformer's scale
    for a table initialised N(0, 1/64): the scale is applied twice."""
    torch.manual_seed(0)
    return _TokenMLP(1.0, math.sqrt(_WIDTH))


def default_table() -> nn.Module:
    """nn.Embedding's default N(0, 1) table into the same MLP."""
    torch.manual_seed(0)
    return _TokenMLP(1.0)


def default_table_plus_zero_positions() -> nn.Module:
    """The default table plus a zero-initialised position table: the sum, std 1, is what the MLP
    reads, and the position table's own std of 0 is no fault."""
    torch.manual_seed(0)
    return _TokenMLP(1.0, positions=32)


def transformer_table() -> nn.Module:
    """A table initialised N(0, 1/64) and multiplied by sqrt(64), as in the Transformer: std 1."""
    torch.manual_seed(0)
    return _TokenMLP(_WIDTH**-0.5, math.sqrt(_WIDTH))


class _PreNormLM(nn.Module):
    """GPT-2 in miniature: token and position tables and every weight N(0, 0.02^2) (the branch's
    output projection 0.02 / sqrt(2) for one block), one pre-LayerNorm MLP block on the residual
    stream, a final LayerNorm and a head."""

    def __init__(self, positions: int = 32) -> None:
        super().__init__()
        self.tokens, self.positions = nn.Embedding(_VOCAB, _WIDTH), nn.Embedding(positions, _WIDTH)
        self.norm, self.final_norm = nn.LayerNorm(_WIDTH), nn.LayerNorm(_WIDTH)
        self.mlp = nn.Sequential(nn.Linear(_WIDTH, 4 * _WIDTH), nn.GELU(), nn.Linear(4 * _WIDTH, _WIDTH))
        self.head = nn.Linear(_WIDTH, _VOCAB)
        for layer in (self.tokens, self.positions, self.mlp[0], self.head):
            nn.init.normal_(layer.weight, std=0.02)
        nn.init.normal_(self.mlp[2].weight, std=0.02 / math.sqrt(2))
        for linear in (self.mlp[0], self.mlp[2], self.head):
            nn.init.zeros_(linear.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        x = x + self.mlp(self.norm(x))
        return self.head(self.final_norm(x))


def gpt2_pre_layernorm() -> nn.Module:
    """GPT-2's N(0, 0.02^2) tables where every layer reads the stream through a LayerNorm."""
    torch.manual_seed(0)
    return _PreNormLM()


def default_table_times_sqrt_d_into_attention() -> nn.Module:
    """nn.Embedding's default table times sqrt(128) read by a post-LayerNorm block's
    nn.MultiheadAttention: the LayerNorm after the block cannot undo the scale, which sharpens
    the softmax inside the attention."""
    torch.manual_seed(0)
    return TokenEncoder(attention=SelfAttention("module"))


def default_table_times_sqrt_d_then_layer_norm() -> nn.Module:
    """The same embedding through a LayerNorm before the attention reads it."""
    torch.manual_seed(0)
    return TokenEncoder(norm_first=True, attention=SelfAttention("module"))


def _scaled(graph: SignalGraph, view: NodeView) -> NodeView:
    """What the next layers read of the embedding: its output after the scaling, dropout and sums
    applied straight to it."""
    users = graph.through_plumbing(view.name, "users")
    while len(users) == 1 and users[0].kind.family in _ONWARD and users[0].stats is not None:
        view = users[0]
        users = graph.through_plumbing(view.name, "users")
    return view


class EmbeddingScale(Rule):
    """An embedding's output std is far from 1 and no normalization layer corrects it.

    What it does:
    For each embedding, measures the std of its output for uniformly drawn ids, after any
    multiply or sum applied straight to it (the Transformer's ``* sqrt(d_model)``, token plus
    position tables: the sum is judged once, so a zero-initialised position table is fine), and
    flags it when that std lies outside [1/band, band]. An embedding whose every use reaches a
    normalization layer before any nonlinearity (through linear steps: layers, adds, dropout,
    reshapes; as on a pre-LayerNorm transformer's residual stream, or BERT's embedding
    LayerNorm) is skipped: the normalization cancels its scale, so GPT-2's N(0, 0.02^2) tables
    are fine. A softmax or an attention is a nonlinearity: a post-LayerNorm block's norm comes
    after the attention has read the embedding at its own scale.

    Why is this bad?
    For token models the embedding is where the signal starts: every layer after it is
    initialized for inputs of unit scale, and IL101 measures drift relative to the embedding's
    output, so it cannot see a network that runs at the wrong scale throughout. At std 0.02
    every GELU, SiLU or tanh after it is nearly linear and the logits are ~0; at std 8,
    saturating activations are pinned and softmax attention is one-hot from the start.

    Example:
    ``nn.init.normal_(embedding.weight, std=0.02)`` (GPT-2's init) feeding an MLP directly:
    std 0.02, 50x too small. Or nn.Embedding's default N(0, 1) table multiplied by
    ``math.sqrt(d_model)`` (the Transformer's factor, meant for a N(0, 1/d_model) table): std 8.

    Fix:
    Keep nn.Embedding's default N(0, 1) init; scale by ``sqrt(d_model)`` only a table initialised
    N(0, 1/d_model); or put a LayerNorm after the embedding (or before every layer that reads
    it, as pre-LayerNorm transformers do).

    Thresholds: ``band`` (4.0) is the allowed factor above or below 1, IL101's band for drift;
    beyond ``error_band`` (100.0) the finding is an error. nn.Embedding's default table reads
    1.0, the Transformer's N(0, 1/d) table times sqrt(d) reads 1.0, GPT-2's 0.02 reads 50x.
    """

    code = "IL104"
    name = "embedding-scale"
    thresholds = {"band": 4.0, "error_band": 100.0}
    needs_structure = True
    flagged = [
        Example(gpt2_table_into_mlp), Example(default_table_times_sqrt_d),
        Example(default_table_times_sqrt_d_into_attention),
    ]
    clean = [
        Example(default_table), Example(default_table_plus_zero_positions), Example(transformer_table),
        Example(gpt2_pre_layernorm), Example(default_table_times_sqrt_d_then_layer_norm),
    ]

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        judged: set[str] = set()
        for view in graph.nodes.values():
            if view.kind.name != "embedding" or view.stats is None:
                continue
            if not any(n in graph.input_dependent for n in view.inputs):
                continue  # a table read at positions (T5's relative attention bias), not at the input's ids
            scaled = _scaled(graph, view)
            std = scaled.stats.std
            if scaled.name in judged or not math.isfinite(std):  # a sum of tables is judged once
                continue
            judged.add(scaled.name)
            factor = max(std, 1 / std) if std > 0 else math.inf
            if factor <= self.limits["band"] or graph.normalized_before_nonlinearity(scaled.name):
                continue
            onward = f" at {scaled.label}, where it is scaled or summed (its own: {view.stats.std:.3g})"
            yield self.finding(
                view, "error" if factor > self.limits["error_band"] else "warning",
                f"this embedding's output std is {std:.3g}{onward if scaled is not view else ''}, "
                f"{factor:.3g}x {'below' if std < 1 else 'above'} 1, and the layers after it read it "
                "without a normalization layer. Initialize the table N(0, 1) (nn.Embedding's default), "
                "multiply by sqrt(d_model) only a N(0, 1/d_model) table, or add a LayerNorm after it",
                std=std, factor=factor, band=self.limits["band"], embedding_std=view.stats.std,
                scaled_node=scaled.name,
            )

"""IL103 residual-growth."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn

from initlint.graph import NORM, RESIDUAL_ADD, NodeView, SignalGraph
from initlint.rule import Example, Finding, Rule
from initlint.rules._models import ResidualMLPBlock

_RESETS = frozenset({NORM, "weighted"})
"""Roles that rescale the stream itself: a post-norm block or a projection shortcut between two
residual adds starts a new stretch instead of carrying the old one's growth."""


def _residual_mlp(scale: float = 1.0, zero_last: bool = False, blocks: int = 16, width: int = 64) -> nn.Module:
    """``blocks`` residual MLP blocks in a row, seeded, with no normalization anywhere."""
    torch.manual_seed(0)
    return nn.Sequential(*(ResidualMLPBlock(width, scale, zero_last=zero_last) for _ in range(blocks)))


def unscaled_residual_mlp() -> nn.Module:
    """Sixteen ``x + Linear(ReLU(Linear(x)))`` blocks, Kaiming init, no norm: the stream grows ~1500x."""
    return _residual_mlp()


def zero_init_residual_mlp() -> nn.Module:
    """The same blocks with each branch's last Linear zero-initialised: every block starts as the identity."""
    return _residual_mlp(zero_last=True)


def scaled_residual_mlp() -> nn.Module:
    """The same blocks with each branch scaled by 1/sqrt(16): the stream grows ~2x in all."""
    return _residual_mlp(scale=16**-0.5)


class _PreNormBlock(nn.Module):
    """``x + Linear(GELU(Linear(LayerNorm(x))))`` with PyTorch's default init."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm, self.inner, self.outer = nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.outer(nn.functional.gelu(self.inner(self.norm(x))))


class _PreNormLanguageModel(nn.Module):
    def __init__(self, blocks: int = 32, width: int = 64, vocabulary: int = 100) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, width)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.Sequential(*(_PreNormBlock(width) for _ in range(blocks)))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, vocabulary)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(ids))))


def prenorm_language_model() -> nn.Module:
    """GPT-style: a std-0.02 embedding, 32 pre-LayerNorm blocks, a final LayerNorm. The stream
    grows ~4.8x from the first add, additively (each branch reads it through its norm, so the
    stream's scale never feeds back), and the final norm closes it: the design."""
    torch.manual_seed(0)
    return _PreNormLanguageModel()


def _closed_pre_norm(graph: SignalGraph, run: list[NodeView]) -> bool:
    """Whether every branch of ``run`` reads the stream only through a normalization layer (a
    pre-norm stack: each add adds a variance that does not depend on the stream's, so growth is
    additive) and a normalization layer on the main path after the last add closes the stream."""
    path = graph.measured(graph.main_path)
    position = {view.name: index for index, view in enumerate(path)}
    for add in run:
        stream = path[position[add.name] - 1]
        readers = graph.through_plumbing(stream.name, "users")
        if not any(NORM in r.roles for r in readers) or any(
                r.name != add.name and NORM not in r.roles for r in readers):
            return False
    return any(NORM in view.roles for view in path[position[run[-1].name] + 1:])


def _stretches(graph: SignalGraph) -> list[list[NodeView]]:
    """Runs of two or more residual adds along the main path that the stream reaches through
    identity shortcuts only (activations and plumbing between them are fine)."""
    runs: list[list[NodeView]] = [[]]
    for view in graph.measured(graph.main_path):
        if RESIDUAL_ADD in view.roles:
            runs[-1].append(view)
        elif view.roles & _RESETS and runs[-1]:
            runs.append([])
    return [run for run in runs if len(run) > 1 and run[0].signal_std]


class ResidualGrowth(Rule):
    """The residual stream's signal std grows with each residual add along the main path.

    What it does:
    Follows the residual adds on the main path (``x + f(x)``, where the path takes the skip
    connection) in stretches that the stream reaches through identity shortcuts only: a norm or
    a weighted layer between two adds (a post-norm block, a projection shortcut) starts a new
    stretch. Within each stretch, compares the signal std (the across-sample part, as IL101)
    after the last add with that after the first, and flags the stretch that grows the most when
    it grows by more than ``band``. It reports the growth per add, which tells additive growth
    (a pre-norm stack, ~sqrt(L)) from multiplicative growth (unnormalised blocks, exponential).
    A stretch whose every branch reads the stream only through a normalization layer, and that
    a normalization layer on the main path closes, passes: its growth is additive, the norms
    cancel it wherever it is read, and a small embedding (GPT-2's and Llama's std 0.02) makes
    the growth from the first add large by design.

    Why is this bad?
    Each add ``x_{l+1} = x_l + f(x_l)`` adds the branch's variance to the stream's. With a branch
    of unit variance (pre-norm) the std grows like sqrt(L); when the branch sees the stream
    unnormalised and has a Kaiming gain, its variance is the stream's own, and the std doubles
    every one or two blocks. Late blocks' contributions then drown in the stream, the output
    scale depends on depth, activations overflow in low precision, and the gradient grows
    back through the stack by a like factor (each block's Jacobian is I + J).

    Example:
    Sixteen ``x + Linear(ReLU(Linear(x)))`` blocks with ``kaiming_normal_`` on both layers and no
    normalization: each block multiplies the variance by ~2.7, so the stream's std ends ~1500x
    its value after the first add.

    Fix:
    Start every block as the identity: zero-init each branch's last layer (its BatchNorm weight,
    as ``zero_init_residual=True`` in torchvision; SkipInit; ReZero's ``x + alpha * f(x)`` with
    ``alpha = 0``). Or scale each branch by 1/sqrt(L) for L blocks (Fixup, GPT-2's init of its
    output projections) or by a learnable scalar initialised small (LayerScale, 1e-5 to 0.1).

    Thresholds: ``band`` (4.0) is the largest allowed growth of the std from the first add of a
    stretch to its last. It is IL101's band, and it separates what the remedies above give from
    what they prevent. Measured: 1.0 with zero-init branches; 1.1 to 1.8 for ResNets with
    BatchNorm; 1.1 to 1.7 for pre-norm transformers of 6 to 48 layers with PyTorch's default
    init, 2.1 with GPT-2's init, 1.5 to 3.4 with Xavier weights; 1.8 to 2.0 for sixteen Kaiming
    branches scaled by 1/sqrt(16) (e ~ 2.7 at most, in theory, for branches of variance 2);
    2.6 to 3.8 for 24 to 64 pre-norm blocks with unit-variance branches (sqrt((L + 1) / 2) in
    theory, less the branches' constant offsets). Against that: 75 for sixteen unscaled blocks
    whose branch variance equals the stream's, ~1000 to 3000 for sixteen Kaiming branches. GPT-2's
    init without its 1/sqrt(2L) scaling grows 6.5 to 16x (6 to 48 layers) and Llama's (no such
    scaling) 5x over 4 layers of width 256, but as closed pre-norm stacks they pass (see above).
    """

    code = "IL103"
    about_the_path = True
    name = "residual-growth"
    thresholds = {"band": 4.0}
    needs_structure = True
    flagged = [Example(unscaled_residual_mlp)]
    clean = [Example(zero_init_residual_mlp), Example(scaled_residual_mlp), Example(prenorm_language_model)]

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        band = self.limits["band"]
        grown = [run for run in _stretches(graph)
                 if run[-1].signal_std / run[0].signal_std > band and not _closed_pre_norm(graph, run)]
        if not grown:
            return
        run = max(grown, key=lambda r: r[-1].signal_std / r[0].signal_std)
        first, last, adds = run[0], run[-1], len(run)
        growth = last.signal_std / first.signal_std
        crossing = next(v for v in run if v.signal_std / first.signal_std > band)
        per_add = growth ** (1 / (adds - 1))
        yield self.finding(
            crossing, "warning",
            f"the residual stream's signal std grows {growth:.3g}x over {adds} residual adds "
            f"({first.signal_std:.3g} at {first.label} -> {last.signal_std:.3g} at {last.label}, "
            f"{per_add:.3g}x per add; band {band:g}x, passed at {crossing.label}): each x + f(x) "
            "adds its branch's variance to the stream. Start each block as the identity "
            "(zero-init the branch's last layer or its BatchNorm weight, SkipInit), or scale each "
            f"branch by 1/sqrt({adds}) or by a learnable scalar initialised small (LayerScale)",
            band=band, growth=growth, growth_per_add=per_add, residual_adds=adds,
            first_node=first.name, first_std=first.signal_std, last_node=last.name,
            last_std=last.signal_std, crossing_node=crossing.name,
        )

"""``fix``: probe, plan the renorm constants, rewrite the graph (or fold), verify, measure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.fx as fx
import torch.nn as nn

from initlint import __version__
from initlint.errors import InitlintError
from initlint.api import MODEL_EXITS, Analysed, CheckOptions, ModelSource, analyse, parse_options, require_module
from initlint.fold import FoldResult, fold_plan, unfolded_constants
from initlint.materialize import on_meta
from initlint.model_outputs import relative_difference
from initlint.directions import drawn_once
from initlint.never_worse import decline_what_hurts
from initlint.selection import select_rules
from initlint.preserve import model_preserved
from initlint.renorm import DKS, DKS_SCALE, Renorm, plan_renorm, require_method
from initlint.rewrite import apply_plan, verify
from initlint.user_code import exits_refused


@dataclass
class FixResult:
    patched: fx.GraphModule
    plan: list[Renorm]
    analysed: Analysed
    folded: FoldResult | None = None
    fold_error: float | None = None
    """max |folded output - renorm-node output| / std(renorm-node output) on the probe batch."""
    method: str = DKS
    """How activations were fixed: ``renorm.METHODS``."""
    declined: list[str] = field(default_factory=list)
    """Kinds of change left out because they made the model worse, and how."""
    still_worse: str = ""
    """What the fixed model still has that the original lacked (nothing, normally)."""
    still_found: tuple[str, ...] = ()
    """Every warning or error the fixed model still has ("IL101 at getitem"): what no constant
    repaired, such as the drift inside an LSTM, whose gates no renorm reaches."""
    left_out: list[dict] = field(default_factory=list)
    """With ``fold``: constants that no exact fold carries, left out of the plan (with why)."""

    @property
    def unverified(self) -> list[str]:
        """Nodes whose constants missed their target on the re-probe."""
        return [r.node for r in self.plan if r.verified is False]

    def planned_at(self) -> str | None:
        """A warning when the constants were fitted at inferred input sizes: the constants of
        a pool or a layer after one depend on the feature maps' size (DeepLabV3's, fitted on
        the 2x2 maps of an inferred 32x32 input, overshoot at 224)."""
        inferred = [spec for spec in self.analysed.inputs.specs if spec.inferred_from]
        if not inferred:
            return None
        maps = [(min(v.stats.shape[2:]), v.module or v.name) for v in self.analysed.graph.nodes.values()
                if v.kind.name == "conv" and v.stats is not None and len(v.stats.shape) > 2]
        shapes = ", ".join(f"{spec.name} {tuple(spec.shape)}" for spec in inferred)
        line = (f"  planned at inferred inputs ({shapes}); the constants are fitted at these sizes, so give "
                "--input-shape or --input at the size you train at")
        smallest = min(maps, default=None)
        if smallest is not None and smallest[0] < TINY_FEATURE_MAP:
            line += f" (feature maps shrink to {smallest[0]} at {smallest[1]})"
        return line

    def summary(self, folder: str) -> str:
        sites = Counter(r.site for r in self.plan)
        parts = ", ".join(f"{count} {site}" for site, count in sorted(sites.items()))
        nothing = "none kept" if self.declined or self.left_out else \
            "none applies" if self.still_found else "none needed"
        lines = [f"initlint: wrote {folder}: {len(self.plan)} renorm constants ({parts or nothing})"]
        if redrawn := sum(r.orthogonal is not None for r in self.plan):
            lines.append(f"  {redrawn} Linear/Conv layer(s) took orthogonal directions at their own norm, as LSUV "
                         "starts from (--keep-directions keeps yours and only rescales)")
        if paired := sum(r.pairing is not None for r in self.plan):
            gates = sum(r.pairing is not None and r.pairing.duplicated for r in self.plan)
            through = f" (through {gates} gate(s), whose layer gives both units of a pair one gate)" if gates else ""
            lines.append(f"  {paired} of them in looks-linear pairs, which make the ReLU-like activations between "
                         f"them linear at init{through}")
        if self.analysed.traced.note:  # how the model was captured: a wrapper taken off, eval mode
            lines.append(f"  note: {self.analysed.traced.note}")
        if (warning := self.planned_at()) is not None:
            lines.append(warning)
        lines += [f"  declined {reason}" for reason in self.declined]
        if self.still_worse:
            lines.append(f"  warning: the fixed model still has what the original lacked: {self.still_worse}")
        if self.still_found:
            lines.append(f"  not repaired: the fixed model still has {len(self.still_found)} finding(s), "
                         f"{', '.join(self.still_found)} (`initlint check {folder}` explains them)")
        if self.unverified:
            lines.append(f"  {len(self.unverified)} missed their target on the re-probe: "
                         f"{', '.join(self.unverified)}")
        if self.folded is not None:
            lines.append(f"  folded into your model's weights: output differs from the renorm-node model by "
                         f"{self.fold_error:.2g} of its std" + (" (the constants below are missing)"
                                                                  if self.folded.unfolded else ""))
            lines += [f"  not folded: {_described(item)}" for item in self.folded.unfolded]
            if self.folded.balanced:
                lines.append(f"  at {self.folded.balanced} ReLU-like activation(s), the scale is shared between the "
                             "layers before and after it so that their gains agree (same function)")
        if self.left_out:
            lines.append(f"  left out of the plan, since no exact fold carries them ({len(self.left_out)}; the rest "
                         "was planned again without them, so the folded model computes model.py's):")
            lines += [f"    {_described(item)}" for item in self.left_out]
        return "\n".join(lines)

    def plan_document(self, target: str) -> dict:
        return {
            "initlint": __version__,
            "target": target,
            "inputs": [spec.to_dict() for spec in self.analysed.inputs.specs],
            "capture": self.analysed.traced.mode,
            "method": self.method,
            "device": str(self.analysed.device),
            "constants": [renorm.to_dict() for renorm in self.plan],
            "unverified": self.unverified,
            "folded": self.folded is not None,
            "unfolded": self.folded.unfolded if self.folded else [],
            "left_out": self.left_out,
            "fold_error": self.fold_error,
            "balanced": self.folded.balanced if self.folded else 0,
            "declined": self.declined,
            "still_worse": self.still_worse,
            "still_found": list(self.still_found),
        }


def _described(item: dict) -> str:
    return f"{item['node']} (x{item['scale']:.4g} {item['bias']:+.4g}): {item['reason']}"


TINY_FEATURE_MAP = 8
"""Feature maps smaller than this (per side) make a warning when shapes were inferred."""
FIX_BATCH = 64
"""Probe batch for planning when shapes are inferred: each constant is a batch estimate."""


def run_fix(
    model: nn.Module, example_inputs: Sequence[torch.Tensor], options: CheckOptions, source: ModelSource,
    fold: bool = False, overrides: Mapping[str | type, str] | None = None, method: str | None = None,
    keep_directions: bool = False,
) -> FixResult:
    """Plan, rewrite, verify (and fold); ``model``'s tensors and every RNG are as before afterwards.
    Without a ``method``, ``default_method(fold)``. The layers the plan rescales take orthogonal
    directions (``initlint.directions``) unless ``keep_directions``."""
    with model_preserved(model), exits_refused(*MODEL_EXITS), drawn_once():
        return _fixed(model, example_inputs, options, source, fold, overrides, method or default_method(fold),
                      None if keep_directions else options.seed)


def default_method(fold: bool) -> str:
    """Kernel shaping; folded, only where an input scale shapes the activation (tanh, sigmoid):
    a ReLU-like one is shaped by an input shift, and folded, only the centring after it can go
    into the next layer's bias: that layer trains on inputs of mean ~1.9 stds (Adam,
    benchmarks/train_digits.py: relu x30 0.22 and gelu x30 0.20 folded with kernel shaping,
    against 0.95 and 0.93 with the renorm constants, which it gets instead, or between two
    weighted layers looks-linear pairs, ``initlint.looks_linear``: 0.960 and 0.970)."""
    return DKS_SCALE if fold else DKS


def _fixed(
    model: nn.Module, example_inputs: Sequence[torch.Tensor], options: CheckOptions, source: ModelSource,
    fold: bool, overrides: Mapping[str | type, str] | None, method: str, directions_seed: int | None,
) -> FixResult:
    require_method(method)
    if on_meta(model):
        raise InitlintError(
            "the model's parameters are on the meta device; `initlint fix` writes the fixed weights, so "
            "build the model on a real device (`initlint check` probes a meta model one layer at a time)."
        )
    analysed = analyse(
        model, example_inputs, replace(options, batch_size=FIX_BATCH), source,
        needs_graph="`initlint fix` rewrites the captured graph, so it needs one: declare the block with "
                    "data-dependent control flow a leaf module (leaf-modules in [tool.initlint], or "
                    "leaf_modules=[Block] in Python).",
        any_size=True,
    )
    graph_module = analysed.traced.graph_module

    def plan_without(kinds: frozenset[str], constants: frozenset[tuple[str, str]]) -> list[Renorm]:
        return plan_renorm(graph_module, analysed.graph, analysed.inputs, analysed.model, overrides, method,
                           directions_seed, kinds, constants)

    left_out, unfoldable = _left_out_of_fold(analysed.model, graph_module, plan_without) if fold else ([], frozenset())

    def build(kept: list[Renorm]) -> fx.GraphModule:
        patched = apply_plan(graph_module, kept)
        verify(patched, kept, analysed.inputs, options.seed)
        return patched

    rules = select_rules(options.select, options.ignore, options.thresholds, options.extend_select)
    plan, patched, declined, worse = decline_what_hurts(
        lambda kinds, constants: plan_without(kinds, unfoldable | constants), analysed.graph, rules, build)
    result = FixResult(patched, plan, analysed, method=method, declined=declined, still_worse=worse.describe(),
                       still_found=worse.remaining, left_out=left_out)
    if fold:
        result.folded = fold_plan(analysed.model, graph_module, analysed.graph, plan)
        result.fold_error = relative_difference(result.folded.model, patched, analysed.inputs)
    return result


FOLD_ROUNDS = 4
"""Plans made to find what folds: a site left out changes what later constants measure, rarely
whether they fold."""


def _left_out_of_fold(
    model: nn.Module, graph_module: fx.GraphModule, plan_without: Callable[..., list[Renorm]],
) -> tuple[list[dict], frozenset[tuple[str, str]]]:
    """The constants that no exact fold carries, and their (node, placement). A folded plan
    leaves them out and is made again without them (each constant is measured on what the
    earlier ones give), until what is left folds: the folded model then computes the
    renorm-node model that ``fix`` verified, rather than that model less some constants
    (ResNet-18: 16 of its output's std apart). A gate whose scale cannot fold keeps the shift
    that reopens it, which folds into the layer before."""
    left_out: list[dict] = []
    constants: frozenset[tuple[str, str]] = frozenset()
    for _ in range(FOLD_ROUNDS):
        unfolded = unfolded_constants(model, graph_module, plan_without(frozenset(), constants))
        if not unfolded:
            break
        left_out += unfolded
        constants |= {(item["node"], item["placement"]) for item in unfolded}
    return left_out, constants


def fix(model: nn.Module, *example_inputs: torch.Tensor, fold: bool = False,
        overrides: Mapping[str | type, str] | None = None, method: str | None = None, keep_directions: bool = False,
        **options: object) -> nn.Module:
    """A fixed copy of ``model``: renorm nodes in a GraphModule, or with ``fold=True`` the
    user's own class with the constants folded into its weights. ``overrides`` maps a module
    path or class to a target ("gaussian", "gate" or "none") for everything inside it.
    ``method`` "dks" shapes each activation's kernel (constants before and after it),
    "dks-scale" only where an input scale does it (tanh, sigmoid; ReLU-like ones get renorm's
    constants), "renorm" only renormalizes its output; by default "dks", or "dks-scale" with
    ``fold`` (``default_method``). The Linear and Conv layers it rescales take orthogonal
    directions at their own norm, as LSUV starts from; ``keep_directions=True`` only rescales
    them."""
    model = require_module(model, "initlint.fix")
    result = run_fix(model, example_inputs, parse_options(options), ModelSource(), fold, overrides, method,
                     keep_directions)
    return result.folded.model if fold else result.patched

"""``fix`` never makes a model worse: the fixed model is re-checked at the planned inputs, and a
change that adds a finding the original lacked, or moves an output's std more than 2x further
out of the band around 1, in total and across samples (``OUTPUT_MOVE``; across the band counts
as out of it), is declined: the constants inside the modules where the new findings are, then
whole kinds of change, then, where kinds add a fault only together (CoAtNet's final norm at
0.19x, IL101), all that remains: the original, which is never worse than itself.

The renorm plan is sequential (each site is measured on its already-corrected inputs), so a
change is judged by its effect on the whole model, not locally. Kinds of change are tried away
in order, the ones that rescale existing weights first (an LSUV-like rescale of a residual branch's
last layer removes the skip's dominance; a head's rescale changes the logits' scale).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch.fx as fx

from initlint.choices import SEVERITIES
from initlint.graph import OUTPUT, SignalGraph
from initlint.renorm import Renorm
from initlint.rule import Finding, Rule

DECLINE_ORDER = ("weighted", "pool", "gate", "activation")
OUTPUT_BAND = 4.0
"""An output std within 1/4x..4x of 1 (IL101's band) is in the band."""
OUTPUT_MOVE = 2.0
"""How much further out of the band an output's std may move before it counts: issue 12's bound
for logits and residual streams (GPT-2's tied logits went 0.32 -> 16, x4 past the band). A
smaller bound turns probe noise and small moves at the band's edge into a decline of a whole
kind of change: GPT-2's logits (std 0.23) vary by a fraction of 10 % from probe to probe, and
the LSUV-degenerate SE-CNN's head went 0.25 -> 0.17 with the activation constants that
rescue its training."""


@dataclass(frozen=True)
class Worse:
    """What a fixed model has that its original lacked."""

    findings: frozenset[tuple[str, str | None]]
    """(code, module) of each new finding."""
    outputs: tuple[str, ...]
    """Outputs whose std left the band, or moved further out of it."""
    excess: float = 0.0
    """How much further out of the band they moved, in log units, all outputs together."""
    remaining: tuple[str, ...] = ()
    """Every fault the fixed model has, new or not ("IL101 at getitem"): what fix left unrepaired."""

    def __bool__(self) -> bool:
        return bool(self.findings or self.outputs)

    @property
    def score(self) -> float:
        """Each new finding counts 1; an output counts by how far it moved out of the band,
        so that taking away one kind of change can be seen to help before it all goes."""
        return len(self.findings) + self.excess

    def describe(self) -> str:
        parts = [f"{code} at {module or 'the model'}" for code, module in sorted(self.findings, key=str)]
        parts += [f"the std of output {name} out of the band" for name in self.outputs]
        return ", ".join(parts)


def _output_scales(graph: SignalGraph) -> dict[str, tuple[float, ...]]:
    """Each output's total std and, where the batch has more than one sample, its std across
    samples (what depends on the input). An output has moved only when both have: a shift
    between the constant that every sample shares and the rest is no change of its scale.
    densenet121's logits have std 0.24, of which 0.237 is a per-class constant that its
    uncentred features give the head; centred, they have 0.067 in total and 0.078 across
    samples (0.047 before), and judged by the total std alone every constant was declined.
    RoBERTa's masked-LM logits go the other way (total 0.22 -> 0.23, across samples 0.13 ->
    0.06: position constants take a larger share), and judged across samples alone its
    rescales were declined with the IL101 they fix."""
    return {v.name: (v.stats.std,) if v.stats.sample_std is None else (v.stats.std, v.stats.sample_std)
            for v in graph.nodes.values() if OUTPUT in v.roles and v.stats is not None}


def _out_of_band(std: float) -> float:
    """How far ``std`` is outside the band, in log units (0 inside)."""
    return max(0.0, abs(math.log(max(std, 1e-30))) - math.log(OUTPUT_BAND))


def _further_out(before: float, after: float) -> float:
    """How much further out of the band ``after`` is than ``before``, in log units. A std that
    crosses the band to its other side is out of it by all of its new distance: logits at std
    0.0087 made 11.6 (a tied embedding rescaled x50) have not come nearer the band."""
    same_side = (before > 1) == (after > 1)
    return _out_of_band(after) - (_out_of_band(before) if same_side else 0.0)


def _faults(graph: SignalGraph, rules: list[Rule]) -> list[Finding]:
    """The findings that weights can cause: an info finding (a global pool into the head)
    reports the design, and so does a rule about the widths, whose worst layer (where it
    reports) is the one of several equal ratios that the probe's noise picks (squeezenet1_1's
    squeeze convs, 0.34x and 0.35x: the weighted constants were declined for IL502 at another one)."""
    return [f for rule in rules if not rule.about_widths for f in rule.check(graph) if f.severity != "info"]


def _key(fault: Finding, path_codes: frozenset[str]) -> tuple[str, str | None]:
    """What an original and its fixed graph, whose node names differ, have in common: the code
    and module, or the code alone for a rule about the whole path (``Rule.about_the_path``):
    MaxViT's IL501 moved from one block to another under the fix, and counted as new it kept
    the fix from removing the original's IL101."""
    return (fault.code, None if fault.code in path_codes else fault.module)


def _rank(fault: Finding, path_codes: frozenset[str]) -> int:
    """How bad a path-level fault is (its severity: a drift that grows from a warning to an
    error is new); every other fault ranks alike."""
    return SEVERITIES.index(fault.severity) if fault.code in path_codes else 0


def judge_against(original: SignalGraph, rules: list[Rule]) -> Callable[[SignalGraph], Worse]:
    """What a fixed model has that ``original`` lacked; the original is read once."""
    path_codes = frozenset(rule.code for rule in rules if rule.about_the_path)
    worst: dict[tuple[str, str | None], int] = {}
    for fault in _faults(original, rules):
        key = _key(fault, path_codes)
        worst[key] = max(worst.get(key, -1), _rank(fault, path_codes))
    before = _output_scales(original)

    def worse(fixed: SignalGraph) -> Worse:
        moved = {name: min(map(_further_out, before[name], scales))
                 for name, scales in _output_scales(fixed).items() if name in before}
        outputs = tuple(name for name, excess in moved.items() if excess > math.log(OUTPUT_MOVE))
        faults = _faults(fixed, rules)
        new = frozenset((f.code, f.module) for f in faults if _rank(f, path_codes) > worst.get(_key(f, path_codes), -1))
        return Worse(new, outputs, sum(moved[name] for name in outputs),
                     tuple(f"{f.code} at {f.where}" for f in faults))

    return worse


def compare(original: SignalGraph, fixed: SignalGraph, rules: list[Rule]) -> Worse:
    return judge_against(original, rules)(fixed)


def _inside(module: str | None, modules: set[str]) -> bool:
    return module is not None and any(module == m or module.startswith(m + ".") for m in modules)


def decline_what_hurts(
    plan_without: Callable[[frozenset[str], frozenset[tuple[str, str]]], list[Renorm]], original: SignalGraph,
    rules: list[Rule], build: Callable[[list[Renorm]], fx.GraphModule],
) -> tuple[list[Renorm], fx.GraphModule, list[str], Worse]:
    """The plan with the changes that made the model worse taken away, the model it builds
    (probed), what was declined and why, and what is still worse than the original. First the
    constants inside the modules where the new findings are (T5's query and key rescales, which
    saturate its unscaled attention), then whole kinds of change. ``plan_without(kinds,
    constants)`` plans again without those kinds of site and those (node, placement): the plan
    is sequential, so the constants after a declined rescale were measured on values that no
    longer occur (an activation planned behind a Linear rescaled to std 1 would see its std 0.16
    unrescaled)."""
    judge = judge_against(original, rules)
    kinds: frozenset[str] = frozenset()
    plan = plan_without(kinds, frozenset())
    patched = build(plan)
    worse = judge(SignalGraph(patched))
    modules = {module for _, module in worse.findings if module}
    local = frozenset((r.node, r.placement) for r in plan if _inside(r.module, modules))
    trials: list[tuple[str, frozenset[str], frozenset[tuple[str, str]]]] = []
    if local:
        trials.append((f"the {len(local)} constants inside {', '.join(sorted(modules))}", frozenset(), local))
    trials += [(site, frozenset({site}), frozenset()) for site in DECLINE_ORDER]
    trials.append(("remaining", frozenset(DECLINE_ORDER), frozenset()))  # kinds that add it only together
    constants: frozenset[tuple[str, str]] = frozenset()
    declined: list[str] = []
    for what, more_kinds, more_constants in trials:
        dropped = len(more_constants) if more_constants else sum(r.site in more_kinds for r in plan)
        if not worse or not dropped:
            continue
        trial_plan = plan_without(kinds | more_kinds, constants | more_constants)
        trial = build(trial_plan)
        trial_worse = judge(SignalGraph(trial))
        if trial_worse.score < worse.score:
            label = what if more_constants else f"the {dropped} {what} constants"
            declined.append(f"{label}: with them the fixed model had {worse.describe()}")
            kinds, constants = kinds | more_kinds, constants | more_constants
            plan, patched, worse = trial_plan, trial, trial_worse
    return plan, patched, declined, worse

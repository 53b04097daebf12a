"""fix keeps no kind of change that makes the model worse than it was."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn

from initlint.api import CheckOptions, ModelSource, analyse
from initlint.never_worse import compare, decline_what_hurts
from initlint.renorm import Renorm
from initlint.rules import ALL_RULES
from initlint.rules.fan_mismatch import widening_mlp_fan_in
from initlint.graph import SignalGraph


def _relu_mlp(gain: float) -> nn.Sequential:
    """Eight Linear -> ReLU layers, weights N(0, gain^2 / fan_in): gain sqrt(2) holds the signal."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(8):
        linear = nn.Linear(64, 64)
        nn.init.normal_(linear.weight, std=gain / 64**0.5)
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(64, 4))


def _probed(model: nn.Module):
    return analyse(model, (), CheckOptions(), ModelSource()).traced.graph_module


def _renorm(site: str, module: str = "2") -> Renorm:
    """A stand-in constant, by default in a layer where the judge's findings are not."""
    return Renorm(node=f"_{module}", module=module, site=site, target="std 1", scale=1.0, bias=0.0, source="probe")


RULES = [rule() for rule in ALL_RULES]


def _without(plan: list[Renorm]):
    """A stand-in planner: ``plan`` less the kinds of site it is asked to leave out."""
    return lambda kinds, constants: [r for r in plan if r.site not in kinds and (r.node, r.placement) not in constants]


def test_a_kind_of_change_that_adds_a_finding_is_declined_and_said():
    """The stand-in fix: with its weighted constants the MLP's weights are 3x too large (the
    signal grows 3x per layer: IL101), with only its activation constants it stays healthy."""
    healthy, exploding = _probed(_relu_mlp(2**0.5)), _probed(_relu_mlp(3 * 2**0.5))
    original = SignalGraph(healthy)
    plan = [_renorm("weighted"), _renorm("activation")]
    kept, patched, declined, worse = decline_what_hurts(
        _without(plan), original, RULES, lambda kept: exploding if any(r.site == "weighted" for r in kept) else healthy)
    assert [r.site for r in kept] == ["activation"] and patched is healthy and not worse
    (reason,) = declined
    assert reason.startswith("the 1 weighted constants") and "IL101" in reason


def test_nothing_is_declined_when_nothing_got_worse():
    healthy = _probed(_relu_mlp(2**0.5))
    assert not compare(SignalGraph(healthy), SignalGraph(healthy), RULES)
    plan = [_renorm("weighted")]
    kept, _, declined, _ = decline_what_hurts(_without(plan), SignalGraph(healthy), RULES, lambda kept: healthy)
    assert kept == plan and declined == []


def test_changes_that_add_a_finding_only_together_are_all_declined():
    """With either kind of constant the stand-in model explodes (IL101), so neither kind alone
    helps, and the judge declines all that remains: the original, never worse than itself
    (CoAtNet's fix added IL101 at its final norm that no single kind removed)."""
    healthy, exploding = _probed(_relu_mlp(2**0.5)), _probed(_relu_mlp(3 * 2**0.5))
    plan = [_renorm("weighted"), _renorm("activation")]
    kept, patched, declined, worse = decline_what_hurts(
        _without(plan), SignalGraph(healthy), RULES, lambda kept: exploding if kept else healthy)
    assert kept == [] and patched is healthy and not worse
    (reason,) = declined
    assert reason.startswith("the 2 remaining constants") and "IL101" in reason


def _first_out_of_band(graph: SignalGraph) -> tuple[str, str | None]:
    (finding,) = [f for rule in RULES if rule.code == "IL101" for f in rule.check(graph)]
    return finding.severity, finding.module


def test_a_drift_that_moves_is_not_new_but_one_that_grows_to_an_error_is():
    """IL101 reports where the signal first leaves its 4x band: shrinking 0.6x a layer it leaves
    at the third layer, 0.75x at the fifth, both warnings (60x and 10x over 8 layers, inside the
    100x of an error); 0.4x a layer ends 1500x down, an error. A fix that moves the drift adds
    nothing; one that deepens it into an error does."""
    shrinking = {factor: SignalGraph(_probed(_relu_mlp(factor * 2**0.5))) for factor in (0.6, 0.75, 0.4)}
    (severity_a, module_a), (severity_b, module_b) = map(_first_out_of_band, (shrinking[0.6], shrinking[0.75]))
    assert severity_a == severity_b == "warning" and module_a != module_b
    assert not compare(shrinking[0.6], shrinking[0.75], RULES)
    assert _first_out_of_band(shrinking[0.4])[0] == "error"
    assert ("IL101", _first_out_of_band(shrinking[0.4])[1]) in compare(shrinking[0.75], shrinking[0.4], RULES).findings


def test_what_the_fixed_model_still_has_is_named_new_or_not():
    """Both stand-ins grow the signal 3x per layer (3^8 = 6561x over the body, IL101): no
    finding is new, so nothing is worse or declined, yet the fault is still there to report."""
    exploding = _probed(_relu_mlp(3 * 2**0.5))
    plan = [_renorm("activation")]
    kept, _, declined, worse = decline_what_hurts(_without(plan), SignalGraph(exploding), RULES, lambda kept: exploding)
    assert not worse and declined == [] and any(fault.startswith("IL101 at ") for fault in worse.remaining)
    healthy = _probed(_relu_mlp(2**0.5))
    assert compare(SignalGraph(healthy), SignalGraph(healthy), RULES).remaining == ()


def test_a_finding_about_the_widths_is_no_change_of_the_fix():
    """IL502 comes from the layers' shapes: a fix cannot add it, and where it reports moves with
    the probe's noise among equal ratios, so the judge leaves it out, whatever the models' widths."""
    square = SignalGraph(_probed(_relu_mlp(2**0.5)))
    widened = SignalGraph(_probed(widening_mlp_fan_in()))
    fan_mismatch = [rule for rule in RULES if rule.code == "IL502"]
    assert [f.code for f in fan_mismatch[0].check(widened)] == ["IL502"]  # the widening MLP has it
    assert not compare(square, widened, fan_mismatch)


def test_the_fixed_model_is_judged_with_its_kernel_measured():
    """The judge reads IL105 (kernel collapse and chaos), so the fixed model's re-probe must
    measure its own C map, as `check DIR` will, not carry the original's over with the copied
    graph: else IL105 could never count against a fix."""
    from initlint.fixer import run_fix
    from initlint.kernel import KERNEL

    result = run_fix(_relu_mlp(2**0.5), (), CheckOptions(input_shapes=[(64, 64)]), ModelSource(), False, None, None)
    original = {n.name: n.meta.get(KERNEL) for n in result.analysed.traced.graph_module.graph.nodes}
    fixed = {n.name: n.meta.get(KERNEL) for n in result.patched.graph.nodes}
    measured = [name for name, kernel in fixed.items() if kernel is not None]
    assert len(measured) >= 8, measured
    assert not [name for name in measured if fixed[name] is original.get(name)]


def _head(scale: float) -> nn.Linear:
    """A Linear head whose outputs have std about 0.23 * scale: GPT-2's logits at init, just
    below the band's 1/4."""
    torch.manual_seed(0)
    head = nn.Linear(64, 8, bias=False)
    nn.init.normal_(head.weight, std=0.23 * scale / 64**0.5)
    return head


def test_an_output_counts_only_when_it_moves_more_than_2x_further_out_of_the_band():
    """Issue 12's bound for logits: 0.23 -> 0.14 (x0.6) is no fault of the fix, 0.23 -> 0.09 is."""
    original = SignalGraph(_probed(_head(1.0)))
    assert not compare(original, SignalGraph(_probed(_head(0.6))), RULES)
    worse = compare(original, SignalGraph(_probed(_head(0.4))), RULES)
    assert worse.outputs and "out of the band" in worse.describe()


def _head_with_offset(scale: float, offset: float) -> nn.Linear:
    """``_head(scale)`` whose bias gives each class a constant of std about ``offset``."""
    head = _head(scale)
    head.bias = nn.Parameter(offset * torch.randn(8, generator=torch.Generator().manual_seed(1)))
    return head


def test_an_output_moves_only_when_its_total_and_its_across_sample_std_both_move():
    """Logits of std 0.09 given a per-class constant of std 1 have a total std of about 1 (the
    offset centred features take away: densenet121's logits); logits of std 0.035 given one of
    0.08 have the total std 0.09 that they had before (RoBERTa's, as position constants take a
    larger share). Either way one measure moves more than 2x further out of the band and the
    other does not, so the output's scale has not moved."""
    offset = SignalGraph(_probed(_head_with_offset(0.4, 1.0)))
    output = next(v.stats for v in offset.nodes.values() if "output" in v.roles)
    assert output.std > 8 * output.sample_std  # the constant makes up the total std
    plain = SignalGraph(_probed(_head(0.4)))
    assert not compare(offset, plain, RULES)
    assert not compare(plain, SignalGraph(_probed(_head_with_offset(0.15, 0.08))), RULES)
    assert compare(plain, SignalGraph(_probed(_head(0.15))), RULES).outputs  # both move: it counts


def test_an_output_that_crosses_the_band_has_moved_out_of_it():
    """Logits at std 0.009 made 11.5 are out of the band on its other side (a tied embedding
    rescaled x50); made 0.9 they have come into it."""
    original = SignalGraph(_probed(_head(0.04)))
    assert compare(original, SignalGraph(_probed(_head(50.0))), RULES).outputs
    assert not compare(original, SignalGraph(_probed(_head(4.0))), RULES)


def test_after_a_decline_the_rest_is_planned_again_without_it():
    """The plan is sequential: an activation planned behind a rescaled Linear was measured on
    the rescaled values, so once the rescale is declined its constants must be planned anew."""
    healthy, exploding = _probed(_relu_mlp(2**0.5)), _probed(_relu_mlp(3 * 2**0.5))
    asked: list[frozenset[str]] = []

    def plan_without(excluded: frozenset[str], constants: frozenset[tuple[str, str]]) -> list[Renorm]:
        asked.append(excluded)
        activation = replace(_renorm("activation"), scale=2.0 if "weighted" in excluded else 1.0)
        return [activation] if "weighted" in excluded else [_renorm("weighted"), activation]

    kept, _, declined, _ = decline_what_hurts(
        plan_without, SignalGraph(healthy), RULES,
        lambda kept: exploding if any(r.site == "weighted" for r in kept) else healthy)
    assert asked == [frozenset(), frozenset({"weighted"})] and len(declined) == 1
    assert [(r.site, r.scale) for r in kept] == [("activation", 2.0)]


def test_the_constants_inside_the_modules_with_new_findings_go_first():
    """The exploding MLP's new findings are at layers 0 and 11: the constant in layer 0 is
    declined alone, and the one in layer 2 is kept, kind and all."""
    healthy, exploding = _probed(_relu_mlp(2**0.5)), _probed(_relu_mlp(3 * 2**0.5))
    plan = [_renorm("weighted", module="0"), _renorm("weighted", module="2")]
    kept, _, declined, worse = decline_what_hurts(
        _without(plan), SignalGraph(healthy), RULES,
        lambda kept: exploding if any(r.module == "0" for r in kept) else healthy)
    assert [r.module for r in kept] == ["2"] and not worse
    (reason,) = declined
    assert reason.startswith("the 1 constants inside 0, 11") and "IL101 at 0" in reason

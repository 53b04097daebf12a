"""Apply a renorm plan to a copy of the traced model: renorm nodes, rescaled weights, a check.

A renorm node is a tiny module whose constants are buffers, so they follow ``.to(device)`` and
appear in the state dict as ``renorm_<node>.scale`` / ``renorm_<node>.bias``.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn

from initlint.directions import redrawn
from initlint.inputs import ProbeInputs
from initlint.kernel import probe_kernel
from initlint.probe import STATS, probe
from initlint.renorm import MEAN_TOLERANCE, STD_TOLERANCE, Renorm
from initlint.renorm_layer import RenormLayer
from initlint.weight_scale import scale_parameter


def renorm_node_name(renorm: Renorm) -> str:
    """``renorm_<node>`` after a node, ``renorm_<node>_input`` on its input."""
    return f"renorm_{renorm.node}" + ("_input" if renorm.placement == "before" else "")


@torch.no_grad()
def rescale_weights(module: nn.Module, renorm: Renorm) -> None:
    """Make ``module``'s output ``scale * y + shift`` by changing its weight and bias in place,
    its weight first redrawn with orthogonal directions where the plan says so."""
    if renorm.target.startswith("none"):
        return  # nothing to change, and a computed weight is not even read (spectral_norm's takes a step)
    if renorm.orthogonal is not None:
        for name, value in redrawn(module, renorm.module, renorm.orthogonal, renorm.pairing).items():
            getattr(module, name).copy_(value)
    module.get_parameter(scale_parameter(module)).mul_(renorm.scale)
    if getattr(module, "bias", None) is not None:
        shift = renorm.bias if renorm.channel_bias is None else module.bias.new_tensor(renorm.channel_bias)
        module.bias.mul_(renorm.scale).add_(shift)


def apply_plan(graph_module: fx.GraphModule, plan: list[Renorm]) -> fx.GraphModule:
    """A patched deep copy of ``graph_module``; the original (and the user's model) is untouched."""
    patched = copy.deepcopy(graph_module)
    nodes = {n.name: n for n in patched.graph.nodes}
    for renorm in plan:
        node = nodes[renorm.node]
        if renorm.site == "weighted":
            rescale_weights(patched.get_submodule(node.target), renorm)
            continue
        name = renorm_node_name(renorm)
        patched.add_submodule(name, RenormLayer(renorm.scale, renorm.bias))
        if renorm.placement == "before":
            with patched.graph.inserting_before(node):
                inserted = patched.graph.call_module(name, (node.args[0],))
            node.args = (inserted, *node.args[1:])
            continue
        with patched.graph.inserting_after(node):
            inserted = patched.graph.call_module(name, (node,))
        node.replace_all_uses_with(inserted, delete_user_cb=lambda user: user is not inserted)
    patched.graph.lint()
    patched.recompile()
    return patched


def _close(value: float, target: float, tolerance: float) -> bool:
    return abs(value - target) <= tolerance


def _reached(renorm: Renorm, node: fx.Node, stats) -> bool:
    """Targets: an ``aim`` where the plan sets one; gates mean 1; pools mean 0 and the pool's
    input's across-sample std; the rest std 1, and mean 0 where the target says so. Std within
    10 %, mean within 0.1."""
    if renorm.aim is not None:
        mean, std = renorm.aim
        return _close(stats.mean, mean, MEAN_TOLERANCE) and _close(stats.std, std, STD_TOLERANCE * std)
    if renorm.site == "gate":
        return _close(stats.mean, 1.0, MEAN_TOLERANCE)
    if renorm.site == "pool":
        pooled = node.args[0].args[0].meta.get(STATS)  # renorm node <- pool <- pool's input
        return _close(stats.mean, 0.0, MEAN_TOLERANCE) and _close(
            stats.sample_std, pooled.sample_std, STD_TOLERANCE * pooled.sample_std)
    mean_ok = renorm.target == "std 1" or _close(stats.mean, 0.0, MEAN_TOLERANCE)
    return mean_ok and _close(stats.std, 1.0, STD_TOLERANCE)


def verify(patched: fx.GraphModule, plan: list[Renorm], inputs: ProbeInputs, seed: int) -> None:
    """Probe the patched model and record, on each Renorm, whether it met its target.

    With the plan's own probe batch this proves the rewrite does what the plan measured (the
    constants are batch estimates: on other inputs deep statistics vary by the batch's
    sampling error). The kernel probe runs too, so that judging the fixed model (``never_worse``)
    sees IL105's collapse and chaos as the check of the written model will."""
    probe(patched, inputs, seed)
    probe_kernel(patched, inputs)
    nodes = {n.name: n for n in patched.graph.nodes}
    for renorm in plan:
        if renorm.target.startswith("none"):
            continue  # nothing was changed there, so there is no target to meet
        checked = renorm.node if renorm.site == "weighted" else renorm_node_name(renorm)
        stats = nodes[checked].meta.get(STATS)
        if stats is None:
            continue
        renorm.measured_mean, renorm.measured_std = stats.mean, stats.std
        renorm.verified = _reached(renorm, nodes[checked], stats)

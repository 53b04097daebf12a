"""The kernel probe: how the network maps the cosine between two inputs to the cosine between
their outputs, the C map of Deep Kernel Shaping (Martens et al. 2021) and TAT (Zhang et al. 2022).

The probe batch is rebuilt in groups of four rows: a base row and three partners whose cosine
with it is exactly 0, 0.5 and 0.9 (each partner mixes the base with the part of another row
orthogonal to it, at the base's norm). Forward passes without gradients, as the first training
step runs the model, record at each node the cosine between the base's output and each
partner's (each sample flattened), averaged over the groups: one pass for an image, up to four
for narrow inputs (``PAIRED_FEATURES``). The main probe's statistics come from their own
forward pass and are untouched.

The batch keeps the main probe's size, since a captured graph may hold it as a constant; rows
left over after the last whole group stay as they are. BatchNorm normalizes over this batch,
whose rows are not independent (a partner shares 0.5 or 0.9 of its base): in a BN network the
batch is part of what each sample's output depends on, for the kernel as for training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx as fx

from initlint.errors import InitlintError
from initlint.inputs import ProbeInputs
from initlint.materialize import PieceByPiece
from initlint.module_calls import RANDOM_DRAWS, op_name
from initlint.preserve import buffers_preserved
from initlint.probe import STATS, FirstStepInterpreter, placeholder_values

KERNEL = "initlint_kernel"
"""Node meta: the node's ``KernelStats``."""
INPUT_COSINES = (0.0, 0.5, 0.9)
"""The cosines of the input pairs: orthogonal, halfway, close."""
GROUP = 1 + len(INPUT_COSINES)
"""Rows per group: a base and one partner per input cosine."""
CLOSE = INPUT_COSINES[-1]
"""The pair whose secant to (1, 1) estimates C'(1)."""
PAIRED_FEATURES = 2048
"""Groups times features per sample to average over, where the batch allows: one pair's
cosine spreads by about 1 / sqrt(features) (0.1 to 0.3 at width 64 in deep stacks), so a
default batch of 8 rows (2 groups a pass) takes 4 passes at width 256, and one pass for an
image, whose thousands of features per sample already average it out."""


@dataclass
class KernelStats:
    """A node's output cosine for each input cosine (the C map at those points)."""

    cosines: dict[float, float]

    @property
    def slope(self) -> float:
        """The secant slope (1 - C(0.9)) / (1 - 0.9): C'(1) for a C map that is straight near 1,
        less for a convex one (every C map is convex on [0, 1])."""
        return (1 - self.cosines[CLOSE]) / (1 - CLOSE)

    def to_dict(self) -> dict[str, float]:
        """Keys are the input cosines as text ("0", "0.5", "0.9"), as JSON needs."""
        return {f"{c:g}": value for c, value in self.cosines.items()}


class NoPairs(Exception):
    """Why the probe batch cannot be rebuilt as input pairs."""


def _varies(t: torch.Tensor, batch: int) -> bool:
    return t.dim() > 0 and t.shape[0] == batch and bool((t != t[:1]).any())


def _with_partners(t: torch.Tensor, groups: int) -> torch.Tensor:
    """``t`` with each group's rows 2..4 replaced by partners of row 1 at the input cosines."""
    rows = t.detach().reshape(t.shape[0], -1).to("cpu", torch.float64)  # exact cosines; MPS has no float64
    head = rows[: groups * GROUP].reshape(groups, GROUP, -1)
    base, others = head[:, :1], head[:, 1:]
    others = others - (others * base).sum(-1, keepdim=True) / (base * base).sum(-1, keepdim=True) * base
    norms = others.norm(dim=-1, keepdim=True)
    if not bool((norms > 0).all()) or not bool((base.norm(dim=-1) > 0).all()):
        raise NoPairs("the probe batch has rows that are zero or parallel, between which no pair can be built")
    others = others / norms * base.norm(dim=-1, keepdim=True)
    cosines = torch.tensor(INPUT_COSINES, dtype=rows.dtype, device=rows.device).view(1, -1, 1)
    partners = cosines * base + (1 - cosines.square()).sqrt() * others
    paired = rows.clone()
    paired[: groups * GROUP] = torch.cat([base, partners], dim=1).reshape(groups * GROUP, -1)
    return paired.reshape(t.shape).to(t.device, t.dtype)


def paired_batches(inputs: ProbeInputs) -> tuple[list[list[torch.Tensor]], int]:
    """Batches of the probe's size with float inputs rebuilt as groups of pairs, and the
    number of groups in each. Each batch starts its groups one row later, so that every row
    in turn is a base, until the groups times the features per sample reach
    ``PAIRED_FEATURES`` (at most ``GROUP`` passes: then every row has been a base).
    Inputs whose rows are all equal (an all-ones mask, a constant timestep) are held as they
    are; integer inputs that differ between rows (token ids) have no cosine: ``NoPairs``."""
    batch = inputs.batch_size or 0
    groups = batch // GROUP
    if groups == 0:
        raise NoPairs(f"the probe batch has {batch} row(s), fewer than the {GROUP} of one group (a base and "
                      f"partners at cosines {', '.join(f'{c:g}' for c in INPUT_COSINES)}); give a batch of "
                      f"at least {GROUP}")
    varying = [_varies(t, batch) for t in inputs.tensors]
    for spec, t, varies in zip(inputs.specs, inputs.tensors, varying):
        if varies and not t.is_floating_point():
            raise NoPairs(f"input {spec.name!r} holds integers that differ between samples (token ids), "
                          "between which no cosine is defined; pairs need float inputs")
    if not any(varying):
        raise NoPairs("no float input differs between samples")
    features = sum(t[0].numel() for t, varies in zip(inputs.tensors, varying) if varies)
    passes = min(GROUP, -(-PAIRED_FEATURES // (groups * features)))
    return [
        [_with_partners(t.roll(-shift, dims=0), groups) if varies else t for t, varies in zip(inputs.tensors, varying)]
        for shift in range(passes)
    ], groups


def output_cosines(value: torch.Tensor, groups: int) -> torch.Tensor:
    """For each group (rows) and input cosine (columns), the cosine between the base's output
    and the partner's; NaN where an output is all zeros (no direction)."""
    rows = value.detach()[: groups * GROUP].reshape(groups, GROUP, -1).float()
    base, partners = rows[:, :1], rows[:, 1:]
    cosines = (base * partners).sum(-1) / (base.norm(dim=-1) * partners.norm(dim=-1))
    return cosines.clamp(-1.0, 1.0)  # rounding can take parallel outputs past 1


def _kernel_stats(per_group: list[torch.Tensor]) -> KernelStats | None:
    """The mean over all groups; None where any was not finite."""
    cosines = torch.cat(per_group).mean(dim=0).tolist()
    if not all(math.isfinite(c) for c in cosines):
        return None
    return KernelStats(dict(zip(INPUT_COSINES, cosines)))


class KernelProbe(FirstStepInterpreter):
    """Collects, per node that the main probe measured with the batch in dim 0 (its shape
    unchanged on the paired batch), the cosines of each group into ``found``."""

    def __init__(self, graph_module: fx.GraphModule, groups: int, found: dict[fx.Node, list[torch.Tensor]],
                 pieces: PieceByPiece | None = None) -> None:
        super().__init__(graph_module, pieces)
        self.groups, self.found = groups, found

    def observe(self, n: fx.Node, args: tuple, kwargs: dict, result: object) -> object:
        stats = n.meta.get(STATS)
        if isinstance(result, torch.Tensor) and result.is_floating_point() and stats is not None \
                and stats.sample_std is not None and list(result.shape) == stats.shape:
            self.found.setdefault(n, []).append(output_cosines(result, self.groups))
        return result


def probe_kernel(graph_module: fx.GraphModule, inputs: ProbeInputs, pieces: PieceByPiece | None = None) -> str | None:
    """The C map at every measured node, into ``node.meta[KERNEL]``, from forward passes
    without gradients. Returns a note when it could not be measured (no pairs, or the model
    failed on them); no node then has one (a graph copied from a probed one drops the old maps)."""
    for node in graph_module.graph.nodes:
        node.meta.pop(KERNEL, None)
    try:
        batches, groups = paired_batches(inputs)
    except NoPairs as reason:
        return f"kernel probe skipped: {reason}"
    devices = [t.device for t in inputs.tensors if t.device.type == "cuda"]
    found: dict[fx.Node, list[torch.Tensor]] = {}
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad(), buffers_preserved(graph_module):
            for tensors in batches:
                KernelProbe(graph_module, groups, found, pieces).run(
                    *placeholder_values(graph_module, *inputs.bind(tensors)))
    except InitlintError:
        raise
    except Exception as error:  # the main probe ran: the pairs, not the model, are refused
        reason = (str(error).strip().splitlines() or [""])[0]
        return f"kernel probe skipped: the model failed on the input pairs ({type(error).__name__}: {reason})"
    drawn, after_draws = _after_random_draws(graph_module.graph)
    for node, per_group in found.items():
        if len(per_group) == len(batches) and node not in after_draws:
            node.meta[KERNEL] = _kernel_stats(per_group)
    if drawn is not None and after_draws & found.keys():
        return (f"kernel measured only up to {drawn.name}, where the forward draws random numbers: after it, "
                "the two inputs of a pair meet different draws (a masked autoencoder's choice of patches), "
                "which no C map describes")
    return None


def _after_random_draws(graph: fx.Graph) -> tuple[fx.Node | None, set[fx.Node]]:
    """The first node that draws random numbers in the forward (outside the dropout and
    stochastic-depth calls the probe switches off), and those draws with every node that
    depends on one."""
    draws = [n for n in graph.nodes if n.op in ("call_function", "call_method") and op_name(n) in RANDOM_DRAWS]
    after: set[fx.Node] = set(draws)
    frontier = list(draws)
    while frontier:
        for user in frontier.pop().users:
            if user not in after:
                after.add(user)
                frontier.append(user)
    return (draws[0] if draws else None), after

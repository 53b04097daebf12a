"""IL001 non-finite."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn as nn

from initlint.graph import OUTPUT, NodeView, SignalGraph
from initlint.rule import Example, Finding, Rule
from initlint.rules._models import gain_init, mlp


def nan_weight() -> nn.Module:
    """A Kaiming ReLU MLP in which one weight of the third Linear is NaN (a bad checkpoint merge)."""
    model = mlp(4, 32, nn.ReLU, gain_init(2**0.5))
    with torch.no_grad():
        model[4].weight[3, 7] = float("nan")
    return model


class _LogOfRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.relu(self.linear(x)))  # log(0) = -inf wherever the ReLU is off


def log_of_relu() -> nn.Module:
    """``log(relu(linear(x)))``: about half the outputs are log(0) = -inf."""
    torch.manual_seed(0)
    return _LogOfRelu()


class _SqrtAtZero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.relu(x))  # finite, but d sqrt(u)/du = inf at u = 0


def sqrt_of_relu() -> nn.Module:
    """``sqrt(relu(x))``: every value is finite, the gradient at the ReLU's zeros is not."""
    return _SqrtAtZero()


def healthy() -> nn.Module:
    """The same Kaiming ReLU MLP without the NaN."""
    return mlp(4, 32, nn.ReLU, gain_init(2**0.5))


def _nonfinite_forward(view: NodeView) -> bool:
    return view.stats is not None and view.stats.nonfinite > 0


def _passed_on(graph: SignalGraph, view: NodeView) -> bool:
    """Whether the non-finite values reach the output, through layers that keep them
    non-finite: a causal mask's -inf, which the softmax after it turns into 0, and T5's
    log(0) in its position buckets, which an integer cast and a ``where`` drop, are no fault."""
    readers = graph.through_plumbing(view.name, "users")
    if not readers:  # unknown readers (hooks mode sees no functional code): assume the worst
        return True
    return OUTPUT in view.roles or any(
        r.op == "output" or (_nonfinite_forward(r) and _passed_on(graph, r)) for r in readers
    )


def _nonfinite_gradient(view: NodeView) -> bool:
    grad = view.stats.grad_std if view.stats else None
    return grad is not None and not math.isfinite(grad)


class NonFinite(Rule):
    """A layer produces NaN or Inf values, forward or in the gradient.

    What it does:
    Walks the graph in execution order and reports the first node whose output has NaN or Inf
    values while all its inputs are finite: that node is where they come from, and everything
    downstream only passes them on. Values that the next layer turns finite again are
    intentional (a causal mask's -inf before a softmax) and pass. When the forward pass is
    finite, it walks back from the output and reports the first node whose output's gradient
    is finite while its input's is not: that node's derivative is where the gradient breaks.

    Why is this bad?
    One NaN spreads through every later layer and, in the first optimizer step, into every
    parameter the loss reaches: the model is lost after one step. The usual sources are a NaN
    or Inf parameter (a bad checkpoint or merge, an init that divides by zero), ``log`` or
    ``sqrt`` of values that can be zero or negative, and divisions by a norm that can vanish.

    Example:
    ``torch.log(torch.relu(x))``: wherever the ReLU is off, log(0) = -inf. ``torch.sqrt(
    torch.relu(x))`` is finite but its gradient at 0 is infinite.

    Fix:
    Check the flagged layer's parameters (``torch.isfinite(p).all()``), clamp before ``log`` and
    ``sqrt`` (``x.clamp_min(eps)``), add an epsilon to denominators.

    Thresholds: none; any non-finite value is an error.
    """

    code = "IL001"
    name = "non-finite"
    thresholds: dict[str, float] = {}
    flagged = [Example(nan_weight), Example(log_of_relu), Example(sqrt_of_relu, ((8, 16),))]
    clean = [Example(healthy)]

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        views = list(graph.nodes.values())
        source = next((v for v in views if _nonfinite_forward(v) and _passed_on(graph, v) and not any(
            _nonfinite_forward(graph.view(n)) for n in v.inputs)), None)
        if source is not None:
            stats = source.stats
            yield self.finding(
                source, "error",
                f"{stats.nonfinite} of {math.prod(stats.shape)} values of this {source.op_name} "
                "are NaN or Inf while its inputs are finite; every later layer inherits them",
                nonfinite=stats.nonfinite, values=math.prod(stats.shape),
            )
            return
        source = next((v for v in reversed(views) if v.stats is not None and not _nonfinite_gradient(v)
                       and any(_nonfinite_gradient(graph.view(n)) for n in v.inputs)), None)
        if source is not None:
            yield self.finding(
                source, "error",
                f"the gradient turns NaN or Inf going back through this {source.op_name}: its "
                "output's gradient is finite, its input's is not, so its derivative is infinite "
                "somewhere (e.g. sqrt or log at 0) although the forward pass is finite",
            )

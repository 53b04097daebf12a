"""How far a quantity drifts along the network's body: shared by IL101 (forward) and IL501 (backward)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from initlint.graph import NodeView


@dataclass
class Drift:
    """Ratios of a quantity to its value at the reference node (where the walk begins)."""

    start: NodeView
    """The first node whose ratio leaves the band."""
    start_ratio: float
    worst: NodeView
    worst_ratio: float
    end: NodeView
    end_ratio: float

    @property
    def direction(self) -> str:
        return "grows" if self.worst_ratio > 1 else "shrinks"

    def severity(self, error_band: float) -> str:
        """An error once the drift passes ``error_band`` either way, else a warning."""
        return "error" if _log_distance(self.worst_ratio) > math.log(error_band) else "warning"

    def data(self) -> dict[str, object]:
        return {
            "start_node": self.start.name, "start_depth": self.start.depth, "start_ratio": self.start_ratio,
            "worst_node": self.worst.name, "worst_depth": self.worst.depth, "worst_ratio": self.worst_ratio,
            "end_node": self.end.name, "end_depth": self.end.depth, "end_ratio": self.end_ratio,
        }

    def describe(self) -> str:
        return (
            f"it first leaves the band at {self.start.label} (depth {self.start.depth}, "
            f"{self.start_ratio:.3g}x), reaches {self.worst_ratio:.3g}x at {self.worst.label} "
            f"(depth {self.worst.depth}) and ends at {self.end_ratio:.3g}x at {self.end.label}"
        )


def _ratio(new: float, old: float) -> float:
    if old == 0:
        return 1.0 if new == 0 else math.inf
    return new / old


def _log_distance(ratio: float) -> float:
    return math.inf if ratio in (0.0, math.inf) else abs(math.log(ratio))


def outside(ratio: float, band: float) -> bool:
    return _log_distance(ratio) > math.log(band)


def drift_along(walk: list[NodeView], value: Callable[[NodeView], float | None], band: float) -> Drift | None:
    """Ratios of ``value`` to its value at ``walk[0]``; None when they all stay in [1/band, band]."""
    views = [v for v in walk if value(v) is not None]
    if len(views) < 2:
        return None
    ratios = [(v, _ratio(value(v), value(views[0]))) for v in views[1:]]
    escaped = [(v, r) for v, r in ratios if outside(r, band)]
    if not escaped:
        return None
    worst = max(escaped, key=lambda item: _log_distance(item[1]))
    return Drift(*escaped[0], *worst, *ratios[-1])

"""The rule framework: a rule is one class with its documentation, thresholds and examples.

As in Fixit, a rule carries example models that must and must not trigger it; the test suite
turns every example into a test, so a rule's documentation is also its test. Rules read a
``SignalGraph`` and never run the model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch.nn as nn

from initlint.choices import SEVERITIES
from initlint.errors import InitlintError
from initlint.graph import NodeView, SignalGraph
from initlint.locations import SourceLocation


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass
class Finding:
    code: str
    name: str
    severity: str
    node: str
    module: str | None
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    location: SourceLocation | None = None
    label: str | None = None
    """How a person reads the flagged node (``linear `body.2```); JSON has ``node`` and ``module``."""

    @property
    def where(self) -> str:
        """The flagged node for people: its label, else its module path, quoted (never fx's node name)."""
        return self.label or (f"`{self.module}`" if self.module else "the model's top level")

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "severity": self.severity,
            "node": self.node,
            "module": self.module,
            "message": self.message,
            "data": self.data,
            "location": self.location.to_dict() if self.location else None,
        }


@dataclass(frozen=True)
class Example:
    """A small model for a rule's docs and tests: ``build()`` returns it, seeded and ready."""

    build: Callable[[], nn.Module]
    input_shapes: tuple[tuple[int, ...], ...] = ()

    @property
    def description(self) -> str:
        return inspect.getdoc(self.build) or self.build.__name__


class Rule:
    """Base class. Subclasses set ``code``, ``name``, ``thresholds``, ``flagged``, ``clean``.

    The docstring must have the sections *What it does*, *Why is this bad?*, *Example*, *Fix*;
    ``thresholds`` maps each tunable bound to its documented default.
    """

    code: ClassVar[str]
    name: ClassVar[str]
    thresholds: ClassVar[dict[str, float]] = {}
    needs_structure: ClassVar[bool] = False
    """True when the rule reads the graph's structure (main path, roles between layers), which a
    model probed through hooks lacks; such rules are skipped in ``hooks`` mode."""
    about_widths: ClassVar[bool] = False
    """True when what the rule flags comes from the layers' shapes, whatever their weights
    (IL502): ``fix`` can neither add nor remove it, so its never-worse judge leaves the rule out."""
    about_the_path: ClassVar[bool] = False
    """True when the rule judges the whole path and reports the node where it first leaves its
    band (IL101, IL102, IL103, IL105, IL501): a fix can move that node without adding a fault,
    so ``fix``'s never-worse judge compares such findings by code and severity alone."""
    flagged: ClassVar[list[Example]] = []
    clean: ClassVar[list[Example]] = []

    def __init__(self, **overrides: float) -> None:
        unknown = set(overrides) - set(self.thresholds)
        if unknown:
            raise InitlintError(
                f"{self.code} ({self.name}) has no threshold {', '.join(sorted(unknown))}; "
                f"its thresholds are: {', '.join(sorted(self.thresholds)) or 'none'}."
            )
        self.limits = {**self.thresholds, **overrides}

    @classmethod
    def summary(cls) -> str:
        """The docstring's first line: what the rule flags, in one sentence."""
        return (inspect.getdoc(cls) or "").split("\n", 1)[0].strip()

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        raise NotImplementedError

    def finding(self, view: NodeView, severity: str, message: str, **data: Any) -> Finding:
        return Finding(
            code=self.code, name=self.name, severity=severity, node=view.name, module=view.module,
            message=message, data=data, location=view.location, label=view.label,
        )

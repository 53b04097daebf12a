"""initlint's rules, one module per rule family. Installed as ``initlint.rules``."""

from __future__ import annotations

from initlint.rule import Rule
from initlint.rules.degenerate_gate import DegenerateGate
from initlint.rules.gradient_drift import GradientDrift
from initlint.rules.non_finite import NonFinite
from initlint.rules.pooling_shrinkage import PoolingShrinkage
from initlint.rules.saturated_activation import SaturatedActivation
from initlint.rules.variance_drift import VarianceDrift

ALL_RULES: tuple[type[Rule], ...] = tuple(
    sorted(
        (NonFinite, VarianceDrift, SaturatedActivation, PoolingShrinkage, DegenerateGate, GradientDrift),
        key=lambda rule: rule.code,
    )
)

"""initlint's rules, one module per rule family. Installed as ``initlint.rules``."""

from __future__ import annotations

from initlint.rule import Rule
from initlint.rules.dead_units import DeadUnits
from initlint.rules.degenerate_gate import DegenerateGate
from initlint.rules.embedding_scale import EmbeddingScale
from initlint.rules.fan_mismatch import FanMismatch
from initlint.rules.gradient_drift import GradientDrift
from initlint.rules.init_gain import InitGainMismatch
from initlint.rules.kernel_collapse import KernelCollapse
from initlint.rules.mean_drift import MeanDrift
from initlint.rules.non_finite import NonFinite
from initlint.rules.pooling_shrinkage import PoolingShrinkage
from initlint.rules.residual_growth import ResidualGrowth
from initlint.rules.saturated_activation import SaturatedActivation
from initlint.rules.saturated_attention import SaturatedAttention
from initlint.rules.variance_drift import VarianceDrift

ALL_RULES: tuple[type[Rule], ...] = tuple(
    sorted(
        (
            NonFinite, VarianceDrift, MeanDrift, ResidualGrowth, EmbeddingScale, SaturatedActivation,
            SaturatedAttention, DeadUnits, PoolingShrinkage, DegenerateGate, GradientDrift, FanMismatch, InitGainMismatch,
            KernelCollapse,
        ),
        key=lambda rule: rule.code,
    )
)

"""IL101 variance-drift."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn
from initlint.rules._models import PatchEncoder, max_pool_cnn, mlp, strided_cnn

from initlint.drift import drift_along
from initlint.graph import SignalGraph
from initlint.rule import Example, Finding, Rule


def default_relu_mlp() -> nn.Module:
    """Twelve Linear -> ReLU layers with PyTorch's default init: the signal std shrinks ~2.4x a layer."""
    return mlp(12, 64, nn.ReLU)


def kaiming_relu_mlp() -> nn.Module:
    """The same stack with Kaiming (fan-in, ReLU gain) weights and zero bias keeps its std."""
    def init(linear: nn.Linear) -> None:
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
    return mlp(12, 64, nn.ReLU, init)


def vit_at_0_02() -> nn.Module:
    """A ViT initialized as Hugging Face does: its patch embedding's output has std 0.14, but
    its every path (beside the class token, through the positions and the residual stream)
    meets a LayerNorm before any nonlinearity, which cancels that scale."""
    torch.manual_seed(0)
    return PatchEncoder()


def masked_autoencoder_at_0_02() -> nn.Module:
    """The same ViT keeping 8 of its 16 patches, gathered, as a masked autoencoder's encoder
    does: a gather keeps each value's scale, so the LayerNorms still cancel it."""
    torch.manual_seed(0)
    return PatchEncoder(kept=8)


class VarianceDrift(Rule):
    """The signal std on the main path drifts away from the input's with depth.

    What it does:
    Follows the body of the main path (the input-to-output path through the fewest layers, so
    skip connections rather than residual branches, gates' branches excepted, up to the head:
    the first global pool, else the last weighted layer) and compares each value's signal std
    with the input's. The signal std is the across-sample
    part (what depends on the input; constant offsets such as a sigmoid's mean of 0.5 are not
    signal), and an activation's output is measured in units of its std for N(0, 1) inputs
    (0.21 for sigmoid, 0.58 for relu), so a well-scaled network reads 1 throughout. Flags the path
    when the ratio leaves [1/band, band], naming the node where it starts and the farthest it goes. A global pool's
    shrinkage is IL301's to report. Values whose scale does not matter are left out:
    normalization layers' outputs (a pre-LayerNorm transformer's final LayerNorm lifts GPT-2's
    0.02 stream to 1, which is no drift) and values that only a normalization layer reads (a
    ConvNeXt stem initialised with std 0.02 feeds a LayerNorm).

    The std is per element, which compares like with like across changes of resolution in the
    forward direction: a conv with fan-in init holds the per-element variance whatever its
    stride, and a max pool keeps it (it picks one of k values), while a norm per sample would
    fall 4x at every 2x2 halving. (The gradient, which a max pool routes to 1 of k inputs, is
    compared per sample: see IL501.) What a Kaiming max-pool CNN still loses, about 0.8x per
    pool, is real: the max raises the mean, a per-channel offset, at the expense of the
    input-dependent part, and zero padding cuts a 3x3 conv's fan-in on maps of 2x2 or less.

    Why is this bad?
    A signal that shrinks layer after layer reaches the output as noise-free constants: every
    input gives the same answer and the gradients that depend on it vanish. A growing signal
    saturates activations and overflows low-precision arithmetic. Either way the network cannot
    start learning, and a deeper network is worse.

    Example:
    ``nn.Sequential(*[nn.Linear(64, 64), nn.ReLU()] * 12)`` with PyTorch's default init: each
    layer multiplies the variance by about 1/6, so the std is ~0.001x the input's at the end.

    Fix:
    Initialize each layer for the activation that follows it (``nn.init.kaiming_normal_`` with
    ``nonlinearity="relu"``, or ``calculate_gain``), add normalization layers, or let
    renorm each nonlinearity: scale and shift its output by the constants that
    ``initlint gain ACTIVATION`` prints, so N(0, 1) inputs give N(0, 1) outputs.

    Thresholds: ``band`` (4.0) is the allowed factor up or down; beyond ``error_band`` (100.0)
    the finding is an error.
    """

    code = "IL101"
    about_the_path = True
    name = "variance-drift"
    thresholds = {"band": 4.0, "error_band": 100.0}
    needs_structure = True
    flagged = [Example(default_relu_mlp)]
    clean = [
        Example(kaiming_relu_mlp), Example(max_pool_cnn, ((4, 3, 64, 64),)), Example(strided_cnn, ((4, 3, 64, 64),)),
        Example(vit_at_0_02, ((8, 3, 16, 16),)), Example(masked_autoencoder_at_0_02, ((8, 3, 16, 16),)),
    ]

    def check(self, graph: SignalGraph) -> Iterator[Finding]:
        body = graph.scaled_body()
        drift = drift_along(body, lambda v: v.signal_std, self.limits["band"])
        if drift is None:
            return
        yield self.finding(
            drift.start, drift.severity(self.limits["error_band"]),
            f"the signal std {drift.direction} with depth (relative to the input's, band "
            f"{self.limits['band']:g}x): {drift.describe()}",
            band=self.limits["band"],
            reference_std=body[0].signal_std,
            **drift.data(),
        )

"""initlint fix: renorm nodes, folding, the output folder, and checks of the fixed models."""

from __future__ import annotations

import copy
import json
import operator
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from conftest import DEEP_SIGMOID_NET
from initlint.rules.degenerate_gate import se_net, se_net_after_lsuv

import initlint
from initlint.api import CheckOptions, ModelSource
from initlint.fixer import run_fix
from initlint.graph import SignalGraph
from initlint.rebuild import constructor
from initlint.renorm_layer import RenormLayer
from initlint.safe_code import CodeNotWritable


def default_mlp(activation, depth=20, width=64, seed=0):
    torch.manual_seed(seed)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), activation()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


@pytest.mark.parametrize("activation", [nn.Sigmoid, nn.ReLU, nn.GELU])
@pytest.mark.parametrize("fold", [False, True])
def test_fixed_deep_mlp_checks_clean(activation, fold):
    model = default_mlp(activation)
    assert {"IL101"} <= set(initlint.check(model).codes())  # broken before
    fixed = initlint.fix(model, fold=fold)
    codes = initlint.check(fixed, input_shapes=[(8, 64)]).codes()
    assert "IL101" not in codes and "IL201" not in codes, codes


def test_renorm_constants_are_buffers_with_clear_names_and_the_exact_values():
    fixed = initlint.fix(default_mlp(nn.Sigmoid, depth=3))
    state = fixed.state_dict()
    assert state["renorm__1.scale"].item() == pytest.approx(4.801313, abs=1e-6)
    assert state["renorm__1.bias"].item() == pytest.approx(-2.400657, abs=1e-6)
    assert all(isinstance(m, RenormLayer) for n, m in fixed.named_children() if n.startswith("renorm_"))
    assert "renorm__1.scale" not in dict(fixed.named_parameters())  # constants, not trained


class _ConvBlock(nn.Module):
    """Conv -> BatchNorm -> ReLU, kept whole by the trace (``leaf_modules``), as fx keeps a block
    it cannot trace (timm's MobileViT block)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x)))


def test_a_batchnorm_inside_a_block_kept_whole_keeps_its_running_statistics():
    """The probes run a block kept whole as its own forward, in training mode, so its BatchNorm
    updates its running statistics with each probe batch. Those are the model's state, not the
    plan's: the fixed and the folded model carry the original's, and in evaluation mode the
    folded model computes what the renorm-node model does (before, it differed by about its std
    on MobileViT)."""
    torch.manual_seed(0)
    model = nn.Sequential(_ConvBlock(), nn.Conv2d(8, 8, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(512, 10))
    options = CheckOptions(input_shapes=[(8, 3, 8, 8)], leaf_modules=[_ConvBlock])
    result = run_fix(model, (), options, ModelSource(), fold=True)
    for fixed in (result.patched, result.folded.model):
        norm = fixed.get_submodule("0.norm")
        assert torch.equal(norm.running_mean, model[0].norm.running_mean)
        assert torch.equal(norm.running_var, model[0].norm.running_var)
    assert result.fold_error < 1e-4


def test_fix_leaves_the_model_alone():
    model = default_mlp(nn.Tanh, depth=4)
    before = copy.deepcopy(model.state_dict())
    initlint.fix(model)
    initlint.fix(model, fold=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("method", ["dks", "renorm"])
def test_every_constant_is_verified_on_the_re_probe(method):
    result = run_fix(default_mlp(nn.ReLU), (), CheckOptions(), ModelSource(), method=method, keep_directions=True)
    assert result.plan and all(r.verified for r in result.plan), [
        (r.node, r.measured_mean, r.measured_std) for r in result.plan if not r.verified]
    first = next(r for r in result.plan if r.site == "activation")
    if method == "renorm":
        # the first ReLU sees N(0, 1) (its Linear was scaled to std 1): exact constants, scale
        # only, since relu's mean (0.68 of its std) is below the centering threshold
        assert first.source == "quadrature" and first.bias == 0
        assert first.scale == pytest.approx(initlint.renorm_constants("relu")[0])
    else:  # kernel shaping: a shift on the input, whose output constants then center it
        assert first.placement == "before" and first.scale == pytest.approx(1, abs=0.05) and first.bias > 1
        after = result.plan[result.plan.index(first) + 1]
        assert after.placement == "after" and after.bias < -1


@pytest.mark.parametrize("method", ["dks", "renorm"])
@pytest.mark.parametrize("build", [se_net, se_net_after_lsuv])
def test_gates_become_mean_one_gates(build, method):
    options = CheckOptions(input_shapes=[(16, 3, 16, 16)])
    result = run_fix(build(), (), options, ModelSource(), method=method)
    gates = [r for r in result.plan if r.site == "gate" and r.placement == "after"]
    assert len(gates) == 2 and all(r.scale > 0 and r.bias == 0 for r in gates)  # non-negative gates
    report = initlint.check(result.patched, input_shapes=[(16, 3, 16, 16)], seed=5)
    nodes = {n["name"]: n for n in report.to_dict()["nodes"]}
    for gate in gates:
        mean = nodes[f"renorm_{gate.node}"]["mean"]
        if gate.target == "mean 1":
            assert 0.5 <= mean <= 2
        else:  # closed: x4 at most (test_a_gate_closed_but_spread_gets_at_most_the_band)
            assert gate.scale == 4.0 and mean == pytest.approx(gate.aim[0], rel=0.5) and mean < 0.25
    # A gate's mean-1 constant is read through (the gate keeps its role). After LSUV, the
    # squeeze's ReLU is dead (its bias driven down) and a gate's pre-activation is a bias of ~10:
    # kernel shaping standardizes each activation's input, and the renorm method shifts an input
    # whose mean exceeds its std to mean 0, so no gate stays pinned (IL401) with either.
    assert "IL401" not in report.codes()


def test_a_gate_pinned_by_its_mean_is_recentred_then_aimed_at_mean_1():
    """A gate whose pre-activation sits near -10 has a mean near sigmoid(-10) = 4.5e-5. Its
    input's mean exceeds its std, so the plan shifts it to mean 0 first (sigmoid of a centred
    input has mean 1/2), then scales the gate to mean 1 (about x2), both verified."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), _ClosedGate(), nn.Conv2d(8, 8, 3), nn.Flatten(),
                          nn.Linear(8 * 10 * 10, 4))
    result = run_fix(model, (), CheckOptions(input_shapes=[(8, 3, 14, 14)]), ModelSource(), method="renorm")
    shift, gate = [r for r in result.plan if r.site == "gate"]
    assert shift.placement == "before" and shift.bias == pytest.approx(10, abs=1) and shift.verified
    assert gate.target == "mean 1" and 1.5 <= gate.scale <= 2.5 and gate.verified


def test_a_gate_closed_but_spread_gets_at_most_the_band():
    """A pre-activation of N(-7, 7.8^2) is not recentred (its mean is within its std), and the
    gate's mean, about sigmoid(-7 / sqrt(1 + pi 7.8^2 / 8)) = 0.2, would need x5: a multiplier that
    training releases as soon as it opens the gate. It gets x4 (IL101's band), aims at 4 times
    its measured mean, meets that, and the plan says what mean 1 would have needed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), _SpreadClosedGate(), nn.Conv2d(8, 8, 3), nn.Flatten(),
                          nn.Linear(8 * 10 * 10, 4))
    result = run_fix(model, (), CheckOptions(input_shapes=[(64, 3, 14, 14)]), ModelSource(), method="renorm")
    (gate,) = [r for r in result.plan if r.site == "gate"]
    assert gate.scale == 4.0 and gate.bias == 0 and gate.verified
    needed = float(gate.target.rpartition("x")[2].rstrip(")"))
    assert gate.aim[0] == pytest.approx(4 / needed, rel=1e-3) and 4 < needed < 8


class _ClosedGate(nn.Module):
    """x * sigmoid(mean of x over positions - 10): a squeeze-excitation gate pinned closed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x.mean((2, 3), keepdim=True) - 10)


class _SpreadClosedGate(nn.Module):
    """x * sigmoid(40 (s - 0.68) - 7), s the mean of x over positions: after the plan's first
    conv (std 1) and ReLU (std 1: x1.71), s has mean 0.68 and std 0.195 over samples and
    channels, so the pre-activation is about N(-7, 7.8^2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(40 * (x.mean((2, 3), keepdim=True) - 0.68) - 7)


def test_override_turns_renorm_off_inside_a_module():
    model = default_mlp(nn.Sigmoid, depth=3)
    result = run_fix(model, (), CheckOptions(), ModelSource(), overrides={"1": "none"})
    assert "_1" not in {r.node for r in result.plan} and "_3" in {r.node for r in result.plan}


class _SigmoidBlock(nn.Module):
    """Traced through (not a torch.nn layer); its functional tail has no layer of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.tail = _Halve()

    def forward(self, x):
        return self.tail(torch.sigmoid(self.fc(x)))


class _Halve(nn.Module):
    def forward(self, x):
        return x * 0.5


class _Embedded(nn.Module):
    """Token, position and token-type embeddings summed, then an MLP, as a text encoder: the
    positions and the (all-zero) types are the same for every sample."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens, self.positions, self.types = nn.Embedding(50, 16), nn.Embedding(8, 16), nn.Embedding(2, 16)
        for table in (self.tokens, self.positions, self.types):
            nn.init.normal_(table.weight, std=0.02)
        self.hidden, self.out = nn.Linear(16, 16), nn.Linear(16, 4)
        self.register_buffer("position_ids", torch.arange(8)[None])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) + self.positions(self.position_ids) + self.types(torch.zeros_like(ids))
        return self.out(torch.tanh(self.hidden(x)))


def test_layers_that_do_not_depend_on_the_input_keep_their_scale():
    """At std 1 the position and type tables would drown the tokens (and the types are a pure
    offset): only the token table and the Linear layers are rescaled."""
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (32, 8))
    result = run_fix(_Embedded(), (ids,), CheckOptions(), ModelSource())
    rescaled = {r.module for r in result.plan if r.site == "weighted" and not r.target.startswith("none")}
    assert rescaled == {"tokens", "hidden"}


class _SwiGLU(nn.Module):
    """LLaMA's MLP, twice: down(silu(gate(x)) * up(x))."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.ModuleDict(
            {"gate": nn.Linear(32, 64, bias=False), "up": nn.Linear(32, 64, bias=False),
             "down": nn.Linear(64, 32, bias=False)}) for _ in range(2))
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block["down"](nn.functional.silu(block["gate"](x)) * block["up"](x))
        return self.head(x)


@pytest.mark.parametrize("method", ["dks", "renorm"])
def test_a_gated_linear_units_activation_gets_second_moment_1_and_folds(method):
    """silu(x W) * (x V): the product has mean 0 whatever the SiLU's mean, and variance
    E[silu^2] Var(x V) for independent factors, so the SiLU is scaled to second moment 1
    without a shift (which could not pass the product), and everything folds exactly. On the
    Gaussian input the factors are independent and the product comes out at std 1 (within
    10 %); the second block's input is a product's, heavy-tailed, so there its factors share
    each sample's scale and the product's std is larger (1.4 here), which its Linear rescales."""
    torch.manual_seed(0)
    options = CheckOptions(input_shapes=[(256, 32)])
    result = run_fix(_SwiGLU(), (), options, ModelSource(), fold=True, method=method)
    factors = [r for r in result.plan if r.site == "activation" and r.placement == "after"]
    assert len(factors) == 2 and all(r.bias == 0 and r.target.startswith("second moment 1") for r in factors)
    assert all(r.verified for r in result.plan)
    assert result.folded.unfolded == result.left_out == [] and result.fold_error < 1e-4
    first_product = next(n for n in result.patched.graph.nodes if n.target is operator.mul)
    assert SignalGraph(result.patched).view(first_product.name).stats.std == pytest.approx(1, abs=0.1)


class _CheckedNorm(nn.Module):
    """A norm that first checks its input's rank, as timm's do (``x.ndim == 4``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.ndim == 4, "a batch of images")
        return self.norm(x)


def test_a_layer_before_a_norm_is_not_rescaled_when_something_else_reads_only_its_shape():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), _CheckedNorm(8), nn.ReLU(), nn.Conv2d(8, 8, 3), _CheckedNorm(8),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    plan = run_fix(model, (), CheckOptions(input_shapes=[(16, 3, 8, 8)]), ModelSource()).plan
    assert not [r.module for r in plan if r.site == "weighted"], plan


def test_class_override_reaches_modules_that_fx_traced_through():
    """The traced GraphModule keeps blank modules on the paths of the layers it calls and none
    for layers without weights, so the classes must be looked up in the user's model."""
    torch.manual_seed(0)
    model = nn.Sequential(_SigmoidBlock(), _SigmoidBlock(), nn.Linear(16, 4))
    everything = {r.node for r in run_fix(model, (), CheckOptions(), ModelSource()).plan}
    assert everything  # sigmoids need renorm constants
    result = run_fix(model, (), CheckOptions(), ModelSource(), overrides={_SigmoidBlock: "none"})
    assert result.plan == []


def test_fold_is_exact_for_linear_and_measured_for_padded_convs():
    linear = run_fix(default_mlp(nn.Tanh, depth=4), (), CheckOptions(), ModelSource(), fold=True)
    assert linear.fold_error < 1e-4 and not linear.folded.unfolded and not linear.left_out

    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Sigmoid(), nn.Conv2d(8, 8, 3, padding=1), nn.Sigmoid(),
                         nn.Conv2d(8, 4, 3, padding=1))
    padded = run_fix(conv, (), CheckOptions(input_shapes=[(4, 3, 12, 12)]), ModelSource(), fold=True)
    assert not padded.folded.unfolded and not padded.left_out
    assert padded.fold_error > 1e-3  # the bias is wrong at the zero-padded border, and we say so


def _decoder(last_stride: int) -> nn.Module:
    """Transposed convs as a decoder upsamples; the last takes the sigmoid's output shift, and
    without padding (a "valid" transposed conv, padding k - 1) every output reads every tap."""
    torch.manual_seed(0)
    last = nn.ConvTranspose2d(8, 8, 3, 1, 2) if last_stride == 1 else nn.ConvTranspose2d(8, 8, 4, 2, 3)
    return nn.Sequential(nn.Linear(16, 32 * 4 * 4), nn.Unflatten(1, (32, 4, 4)), nn.ReLU(),
                         nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.Tanh(), nn.ConvTranspose2d(16, 8, 4, 2, 1),
                         nn.Sigmoid(), last, nn.ReLU(), nn.Conv2d(8, 3, 3))


def test_constants_fold_into_transposed_convs_and_a_shift_only_where_it_spreads_evenly():
    """ConvT(a x) = a ConvT(x), and a transposed conv's output rescales as any layer's: the
    decoder folds whole. A shift into a strided one would reach its outputs through 1, 2 or 4
    taps depending on the position, so that one constant is left out, with why."""
    whole = run_fix(_decoder(1), (), CheckOptions(input_shapes=[(8, 16)]), ModelSource(), fold=True)
    assert not whole.left_out and whole.fold_error < 1e-4
    strided = run_fix(_decoder(2), (), CheckOptions(input_shapes=[(8, 16)]), ModelSource(), fold=True)
    (left_out,) = strided.left_out
    assert left_out["node"] == "_6" and left_out["bias"] and "unevenly" in left_out["reason"]
    assert strided.fold_error < 1e-4


def test_unfoldable_constants_are_listed_not_dropped():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 8, bias=False), nn.Sigmoid(), nn.Linear(8, 2))
    result = run_fix(model, (), CheckOptions(), ModelSource(), fold=True)
    (left_out,) = result.left_out
    assert left_out["node"] == "_1" and "needs a bias" in left_out["reason"]
    assert ("_1", "after") not in {(r.node, r.placement) for r in result.plan}
    assert "left out of the plan" in result.summary("fixed")
    assert result.folded.unfolded == [] and result.fold_error < 1e-4  # the folded model computes model.py's


class _ProductLayer(nn.Module):
    """A layer written as a product with its own weights: Hugging Face's ``Conv1D``,
    ``addmm(b, x, W)`` with W laid out (inputs, outputs), or ``F.linear`` (outputs first)."""

    def __init__(self, inputs: int, outputs: int, inputs_first: bool) -> None:
        super().__init__()
        self.inputs_first = inputs_first
        shape = (inputs, outputs) if inputs_first else (outputs, inputs)
        self.weight = nn.Parameter(torch.randn(shape) / inputs**0.5)
        self.bias = nn.Parameter(torch.randn(outputs) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inputs_first:
            return torch.addmm(self.bias, x, self.weight)
        return nn.functional.linear(x, self.weight, self.bias)


class _TiedProducts(nn.Module):
    """Linear -> sigmoid -> @ W -> sigmoid -> @ W: one weight read twice."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(8, 8)
        self.weight = nn.Parameter(torch.randn(8, 8) / 8**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(self.first(x)) @ self.weight
        return torch.sigmoid(h) @ self.weight


@pytest.mark.parametrize("method", ["dks", "renorm"])
@pytest.mark.parametrize("inputs_first", [True, False], ids=["addmm (Conv1D)", "F.linear"])
def test_constants_fold_into_products_with_a_weight(inputs_first, method):
    """Constants before (kernel shaping) and after each sigmoid go into the functional layers
    around it, whichever way their weights are laid out: the folded model computes the
    renorm-node model, and nothing is left unfolded."""
    torch.manual_seed(0)
    model = nn.Sequential(_ProductLayer(8, 16, inputs_first), nn.Sigmoid(), _ProductLayer(16, 16, inputs_first),
                          nn.Sigmoid(), _ProductLayer(16, 4, inputs_first))
    result = run_fix(model, (), CheckOptions(input_shapes=[(64, 8)]), ModelSource(), fold=True, method=method)
    assert [r for r in result.plan if r.site == "activation" and r.bias], result.plan
    assert result.folded.unfolded == result.left_out == [] and result.fold_error < 1e-4


def test_a_weight_read_twice_takes_no_constant():
    """Folding a constant into it would change the other read too: both stay listed."""
    torch.manual_seed(0)
    model = _TiedProducts()
    result = run_fix(model, (), CheckOptions(input_shapes=[(64, 8)]), ModelSource(), fold=True, method="renorm")
    sigmoids = [u for u in result.left_out if u["site"] == "activation"]
    assert len(sigmoids) == 2 and all("operations the constants pass" in u["reason"] for u in sigmoids)
    torch.testing.assert_close(result.folded.model.weight, model.weight, rtol=0, atol=0)


def _pooled_cnn(between: nn.Module, side: int = 4) -> nn.Sequential:
    """conv -> sigmoid -> ``between`` -> conv -> ... : the sigmoid's renorm has a scale and a shift."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sigmoid(), between, nn.Conv2d(8, 8, 3), nn.Flatten(),
                         nn.Linear(8 * side * side, 4))


@pytest.mark.parametrize("method", ["dks", "renorm"])
@pytest.mark.parametrize("between", [nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(6)],
                         ids=["max pool", "average pool", "adaptive average pool"])
def test_constants_fold_through_what_commutes_with_them(between, method):
    """max(a x + c) = a max(x) + c for a > 0, averages and reshapes are linear: the sigmoid's
    output constants reach the next convolution (its input constants, with kernel shaping, go
    into the convolution before it), and the folded model computes the renorm-node model."""
    # IL105 is left out: this 3-layer net's kernel estimate, on 8 channels of 6x6, can tip the
    # never-worse judgement either way, and this test is about what the constants fold through
    options = CheckOptions(input_shapes=[(8, 3, 14, 14)], ignore=["IL105"])
    result = run_fix(_pooled_cnn(between), (), options, ModelSource(), fold=True, method=method)
    sigmoid = [r for r in result.plan if r.site == "activation" and r.placement == "after"]
    assert sigmoid and sigmoid[0].bias != 0 and result.folded.unfolded == result.left_out == []
    assert result.fold_error < 1e-4  # unpadded convolutions: exact up to float32 rounding


def _vgg_like(stages: int = 3, width: int = 16) -> nn.Sequential:
    """[conv 3x3 -> relu -> max pool 2] x ``stages`` -> linear head, PyTorch's default init: every
    conv after the first reads a max pool's output, whose mean is about 1 std of its input."""
    torch.manual_seed(0)
    layers, channels = [], 3
    for _ in range(stages):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * (32 >> stages) ** 2, 10))


@pytest.mark.parametrize("fold", [False, True])
def test_a_conv_after_a_max_pool_is_centred_per_channel(fold):
    """The max pool of a centred input has mean 1.03 stds (max of 4 N(0, 1)), so each channel of
    the next conv gets its own constant (the input's mean times its weights' sum), which an
    output scale alone keeps: the signal part shrinks behind it stage after stage (IL101 on
    torchvision's VGG11 after fix). The plan cancels them in the conv's bias, so on a fresh
    batch each channel's mean is within sampling error of 0."""
    model = _vgg_like()
    result = run_fix(model, (), CheckOptions(input_shapes=[(16, 3, 32, 32)]), ModelSource(), fold=fold)
    centred = [r for r in result.plan if r.channel_bias is not None]
    assert {r.node for r in centred} == {"_3", "_6"}  # the convs after the two body pools
    fixed = result.folded.model if fold else result.patched
    outputs = {}
    for name in ("3", "6"):
        fixed.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: outputs.update({name: o}))
    with torch.no_grad():
        fixed(torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    for name, y in outputs.items():
        means = y.mean(dim=(0, 2, 3))
        spread = (y - means[None, :, None, None]).std()
        # each mean is taken over 64 x 16 x 16 (stage 2: 8 x 8) correlated values; 0.25 of the
        # std is 4 times the error of 256 independent ones, and far below the 1-3 stds the
        # channels' constants have when nothing cancels them
        assert means.square().mean().sqrt() < 0.25 * spread, name
    assert "IL101" not in initlint.check(fixed, input_shapes=[(16, 3, 32, 32)]).codes()


@pytest.mark.parametrize("batch, centred", [(8, False), (128, True)])
def test_channel_means_are_cancelled_only_where_the_probe_measures_them(batch, centred):
    """A Linear reading an input of mean 3 has offsets of 3 stds per unit. Measured on 128 samples
    each mean is within 0.09 of a std, so the bias cancels it; measured on 8 it would write an
    error of 0.35 std into every unit's bias, so the layer keeps the scale alone."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))
    shifted = torch.fx.symbolic_trace(model)
    first = next(n for n in shifted.graph.nodes if n.op == "placeholder")
    with shifted.graph.inserting_after(first):
        plus = shifted.graph.call_function(operator.add, (first, 3.0))
    first.replace_all_uses_with(plus, delete_user_cb=lambda user: user is not plus)
    shifted.recompile()
    result = run_fix(shifted, (), CheckOptions(input_shapes=[(batch, 32)]), ModelSource())
    (layer,) = [r for r in result.plan if r.site == "weighted" and r.node == "_0"]
    assert (layer.channel_bias is not None) == centred


def test_a_shift_does_not_fold_through_a_relu():
    """relu(x + c) is not relu(x) + c: the sigmoid's shift is left out of the plan, and says why."""
    result = run_fix(_pooled_cnn(nn.ReLU(), side=10), (), CheckOptions(input_shapes=[(8, 3, 14, 14)]), ModelSource(),
                     fold=True, method="renorm")
    (sigmoid,) = [u for u in result.left_out if u["node"] == "_1"]
    assert sigmoid["bias"] and "operations the constants pass" in sigmoid["reason"]
    assert result.fold_error < 1e-4  # what is left folds: the folded model computes model.py's


class _GatedStage(nn.Module):
    """conv -> relu, then the relu's output both squeezed into a gate and multiplied by it (a
    squeeze-excitation stage, unpadded so folding is exact): the relu's constant has two
    readers, and the gate's constant reaches the next conv through the multiply. With
    ``summed``, the relu reads the sum of two convs, so no one layer feeds it."""

    def __init__(self, channels: int, gate_input: str = "linear", summed: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3)
        self.other = nn.Conv2d(channels, channels, 3) if summed else None
        self.act = nn.ReLU()
        self.squeeze = nn.Conv2d(channels, channels, 1)
        self.gate_input = gate_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.act(self.conv(x) if self.other is None else self.conv(x) + self.other(x))
        pooled = r.mean((2, 3), keepdim=True)
        return r * torch.sigmoid(self.squeeze(pooled) if self.gate_input == "linear" else pooled)


def _gated_cnn(gate_input: str = "linear", summed: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), _GatedStage(8, gate_input, summed), _GatedStage(8, gate_input, summed),
                         nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


def test_a_scale_folds_into_every_reader_and_through_a_gate_product():
    """A ReLU's scale that both the squeeze path and the product read, with no one layer
    before the ReLU, folds into both layers that start them (the squeeze conv through the
    mean, the next conv through the product), and a gate's scale passes the product it feeds:
    with unpadded convs the folded model then computes the renorm-node model exactly (float32
    rounding), and nothing is left unfolded."""
    options = CheckOptions(input_shapes=[(8, 3, 14, 14)], ignore=["IL105"])
    result = run_fix(_gated_cnn(summed=True), (), options, ModelSource(), fold=True, method="renorm")
    sites = {r.site for r in result.plan if r.scale != 1}
    assert {"activation", "gate"} <= sites and result.folded.unfolded == result.left_out == []
    assert result.fold_error < 1e-4


def test_a_relu_scale_folds_into_the_one_layer_before_it():
    """relu(a z) = a relu(z): the ReLU's scale goes into the conv that alone feeds it, so
    everything after the ReLU (here both factors of r * sigmoid(mean(r)), which no scale
    passes going forward) reads what it reads in the renorm-node model."""
    options = CheckOptions(input_shapes=[(8, 3, 14, 14)], ignore=["IL105"])
    result = run_fix(_gated_cnn("direct"), (), options, ModelSource(), fold=True, method="renorm")
    (relu,) = [r for r in result.plan if r.module == "1.act"]
    assert relu.scale != 1 and relu.bias == 0
    torch.testing.assert_close(result.folded.model[1].conv.weight,
                               result.patched.get_submodule("1.conv").weight * relu.scale)
    assert not [u for u in result.left_out if u["site"] == "activation"] and result.fold_error < 1e-4


class _ResidualMLP(nn.Module):
    """x + fc2(act(fc1(x))), three times, then a head; ``zero_branches`` zeroes each fc2 (Fixup)."""

    def __init__(self, activation: type[nn.Module], zero_branches: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.branches = nn.ModuleList(nn.Sequential(nn.Linear(32, 64), activation(), nn.Linear(64, 32))
                                      for _ in range(3))
        self.head = nn.Linear(32, 10)
        if zero_branches:
            for branch in self.branches:
                nn.init.zeros_(branch[2].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for branch in self.branches:
            x = x + branch(x)
        return self.head(x)


def _gain(weight: torch.Tensor, bias: torch.Tensor | None = None) -> float:
    """The mean squared norm of a layer's output unit: its row of weights, and its bias."""
    squared = weight.detach().double().square().sum() + (0 if bias is None else bias.detach().double().square().sum())
    return float(squared) / weight.shape[0]


@pytest.mark.parametrize("activation, junctions", [(nn.ReLU, 3), (nn.GELU, 0)], ids=["relu", "gelu"])
def test_a_relu_scale_is_shared_between_the_layers_around_it(activation, junctions):
    """relu(z / t) = relu(z) / t, so the fold moves each branch's scale between fc1 and fc2
    until their gains agree (the mean squared norm of an output unit: fc1's rows with its bias,
    fc2's rows), checked here from the weights, with the folded model still computing the
    renorm-node model's output. Unbalanced, fc1 carries the ReLU's scale and fc2 the branch's
    small share of the stream (gains 2.8 and 0.43 in the first branch). GELU is not positively
    homogeneous: no move."""
    result = run_fix(_ResidualMLP(activation), (), CheckOptions(input_shapes=[(64, 32)]), ModelSource(), fold=True)
    assert result.folded.balanced == junctions and result.fold_error < 1e-4
    for branch in result.folded.model.branches if junctions else ():
        assert _gain(branch[0].weight, branch[0].bias) == pytest.approx(_gain(branch[2].weight), rel=1e-6)


def test_a_plain_chain_keeps_its_scales():
    """Outside residual branches every layer's output is at std 1 already: nothing moves (each
    ReLU's scale moved toward equal gains cost the plain ReLU CNN under SGD, 0.68 -> 0.41 over
    10 seeds in benchmarks/train_digits.py), and the ReLU's scale stays in the layer before it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    result = run_fix(model, (), CheckOptions(input_shapes=[(64, 32)]), ModelSource(), fold=True)
    assert result.folded.balanced == 0 and result.fold_error < 1e-4


def test_a_branch_zeroed_on_purpose_takes_no_scale_from_the_layer_before():
    """A Fixup-style zero fc2 has no norm to balance against: it stays zero, and fc1 keeps the
    scale the plan gave it (a balance would divide it by infinity)."""
    result = run_fix(_ResidualMLP(nn.ReLU, zero_branches=True), (), CheckOptions(input_shapes=[(64, 32)]),
                     ModelSource(), fold=True)
    for branch in result.folded.model.branches:
        assert not branch[2].weight.any() and torch.isfinite(branch[0].weight).all() and branch[0].weight.any()


class _TanhBatchNorm(nn.BatchNorm2d):
    """A BatchNorm that applies more than its affine map (as timm's BatchNormAct2d does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(super().forward(x))


class _ConcatenatedBranches(nn.Module):
    """Two conv -> norm -> relu branches concatenated, then a conv: no scale goes forward
    through the concatenation of two different values, so a ReLU's can only go back."""

    def __init__(self, norm: type[nn.Module]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.convs = nn.ModuleList(nn.Conv2d(3, 8, 3, bias=False) for _ in range(2))
        self.norms = nn.ModuleList(norm(8) for _ in range(2))
        self.head = nn.Conv2d(16, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([torch.relu(n(c(x))) for c, n in zip(self.convs, self.norms)], dim=1))


@pytest.mark.parametrize("norm, folds", [(nn.BatchNorm2d, True), (_TanhBatchNorm, False)],
                         ids=["batch norm", "a subclass that does more"])
def test_a_relu_scale_folds_into_the_affine_norm_that_feeds_it(norm, folds):
    """A BatchNorm's output is normalized(x) * weight + bias in training and evaluation alike,
    so relu(a BN(x)) = relu(BN'(x)) with weight and bias times a: the ReLU's scale folds there
    (torchvision's googlenet and densenet121, whose ReLUs feed concatenations, left them out of
    the plan before). A subclass may do more than that map, and is left alone."""
    # the subclass kept whole, as a library's layer is (initlint.known_leaves)
    options = CheckOptions(input_shapes=[(8, 3, 14, 14)], ignore=["IL105"], leaf_modules=[_TanhBatchNorm])
    result = run_fix(_ConcatenatedBranches(norm), (), options, ModelSource(), fold=True, method="renorm")
    relus = [r for r in result.plan if r.node.startswith("relu")]
    left_out = [u["node"] for u in result.left_out if u["node"].startswith("relu")]
    if not folds:
        assert not relus and left_out == ["relu", "relu_1"]
        return
    assert len(relus) == 2 and relus[0].scale != 1 and not left_out and result.fold_error < 1e-4
    for branch, relu in enumerate(relus):
        torch.testing.assert_close(result.folded.model.norms[branch].weight, norm(8).weight * relu.scale)


class _CalledAgain(nn.Module):
    """fc -> relu -> fc again: the ReLU's scale cannot go into the one layer before it, whose
    other call would take it too."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.head = nn.Linear(16, 16), nn.Linear(16, 4)
        with torch.no_grad():
            self.fc.weight.mul_(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(torch.relu(self.fc(x))))


def test_a_scale_does_not_fold_into_a_layer_that_is_called_again():
    torch.manual_seed(0)
    result = run_fix(_CalledAgain(), (torch.randn(64, 16),), CheckOptions(), ModelSource(), fold=True,
                     method="renorm")
    assert [u["node"] for u in result.left_out] == ["relu"]
    assert result.fold_error < 1e-4  # the folded model computes model.py's


def test_a_scale_that_both_factors_of_a_product_carry_is_not_folded():
    """r * sigmoid(mean(r)) with no one layer before the ReLU: a scale on r reaches a
    nonlinearity (and both factors): it stays unfolded, and says why."""
    options = CheckOptions(input_shapes=[(8, 3, 14, 14)], ignore=["IL105"])
    result = run_fix(_gated_cnn("direct", summed=True), (), options, ModelSource(), fold=True, method="renorm")
    relus = [u for u in result.left_out if u["site"] == "activation" and "act" in (u["module"] or "")]
    assert relus and all("operations the constants pass" in u["reason"] for u in relus)


def test_the_bundled_se_resnet_folds_exactly_what_folds_and_checks_clean(run_cli, tmp_path):
    """Its gates' scales and the ReLUs after its residual adds reach no single layer: they are
    left out of the --fold plan, the rest is planned without them and folds exactly (so the
    folded weights are model.py's model), and the result checks clean."""
    example = Path(__file__).resolve().parent.parent / "examples" / "se_resnet_lsuv.py"
    out = tmp_path / "fixed"
    assert run_cli("fix", f"{example}:build", "-o", str(out), "--fold").exit_code == 0
    plan = json.loads((out / "renorm.json").read_text())
    assert {c["site"] for c in plan["left_out"]} == {"activation", "gate"}
    assert plan["unfolded"] == [] and plan["fold_error"] < 1e-4
    assert run_cli("check", str(out)).exit_code == 0


def test_fix_folder_round_trip(run_cli, tmp_path, model_file):
    path = model_file(DEEP_SIGMOID_NET)
    out = tmp_path / "fixed"
    result = run_cli("fix", f"{path}:build", "-o", str(out), "--fold")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["folded_state_dict.pt", "model.py", "renorm.json", "weights.pt"]
    plan = json.loads((out / "renorm.json").read_text())
    # 12 layers rescaled, 12 sigmoids shaped by constants before and after them (with --fold
    # the method is dks-scale by default, and a sigmoid is shaped by an input scale)
    assert len(plan["constants"]) == 36 and plan["folded"] and plan["unfolded"] == plan["left_out"] == []
    assert plan["method"] == "dks-scale"
    torch.load(out / "weights.pt", weights_only=True)  # a plain state dict
    assert run_cli("check", str(out)).exit_code == 0
    assert run_cli("check", f"{path}:build").exit_code == 1

    import importlib.util
    spec = importlib.util.spec_from_file_location("user_model", path)
    user = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(user)
    model = user.build()
    model.load_state_dict(torch.load(out / "folded_state_dict.pt", weights_only=True), strict=True)
    assert initlint.check(model).codes() == []

    again = run_cli("fix", f"{path}:build", "-o", str(out))
    assert again.exit_code == 2 and "--force" in again.stderr
    assert run_cli("fix", f"{path}:build", "-o", str(out), "--force").exit_code == 0
    assert not (out / "folded_state_dict.pt").exists()


def test_a_folder_that_is_not_a_fix_output(run_cli, tmp_path):
    result = run_cli("check", str(tmp_path))
    assert result.exit_code == 2 and "not one written by `initlint fix`" in result.stderr


def test_fix_writes_nothing_when_the_generated_model_does_not_run(run_cli, model_file, monkeypatch, tmp_path):
    """The written folder is imported and probed before it is renamed into place."""
    import initlint.export as export

    path = model_file(DEEP_SIGMOID_NET)
    real = export.generate_code

    def broken(patched, provenance):
        code = real(patched, provenance)
        return code._replace(source=code.source + "\nraise ImportError('broken')\n")

    monkeypatch.setattr(export, "generate_code", broken)
    out = tmp_path / "fixed"
    result = run_cli("fix", f"{path}:build", "-o", str(out))
    assert result.exit_code == 2 and "does not run, so nothing was written" in result.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".fixed")]


NANO_ATTENTION = '''
import math
import torch
from torch import nn

class Attention(nn.Module):
    def __init__(self, width=32):
        super().__init__()
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x):
        q, k, v = self.qkv(x).split(x.size(-1), dim=-1)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # nanoGPT's scaling
        return self.proj(scores.softmax(-1) @ v)

def build():
    torch.manual_seed(0)
    return nn.Sequential(Attention(), nn.Tanh(), nn.Linear(32, 4))
'''


def test_a_wrapped_function_is_declared_at_module_level_and_the_plan_shape_is_kept(run_cli, model_file, tmp_path):
    """fx keeps ``math.sqrt`` of a size as a leaf with ``wrap("math_sqrt")``, which runs only at
    a module's top level; the fixed folder is checked at the shape fix planned with."""
    path = model_file(NANO_ATTENTION)
    out = tmp_path / "fixed"
    assert run_cli("fix", f"{path}:build", "-o", str(out), "--input-shape", "8,16,32").exit_code == 0
    code = (out / "model.py").read_text()
    assert code.index('wrap("math_sqrt")') < code.index("class FixedModel")
    result = run_cli("check", str(out), "--output-format", "json")
    assert result.exit_code in (0, 1), result.output
    assert json.loads(result.stdout)["reports"][0]["inputs"][0]["shape"] == [8, 16, 32]


class _BranchesOnValues(nn.Module):
    """``if x.sum() > 0``: neither fx nor export captures it. Counts forwards on real tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.real_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and not isinstance(x, torch._subclasses.FakeTensor):
            self.real_calls += 1  # not fx's Proxy, not export's fake tensors: a probe
        return torch.sigmoid(self.fc(x)) if x.sum() > 0 else torch.tanh(self.fc(x))


def test_fix_refuses_a_model_without_a_graph_before_probing_it():
    model = _BranchesOnValues()
    with pytest.raises(initlint.InitlintError, match="leaf-modules") as refused:
        initlint.fix(model)
    assert "torch.export failed too" in str(refused.value)
    assert model.real_calls == 0  # the hooks probe would have run the model on real inputs


class _DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 16), nn.Sigmoid(), nn.Linear(16, 16), nn.Sigmoid())
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.body(x)
        return {"logits": self.head(hidden), "hidden": hidden}


def test_fold_is_measured_on_every_output_of_a_model_that_returns_a_dict(run_cli, model_file):
    torch.manual_seed(0)
    result = run_fix(_DictOutput(), (), CheckOptions(), ModelSource(), fold=True)
    assert result.fold_error is not None and result.fold_error < 1e-4  # not nan: each output compared


HOOKED_MODEL = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.act, self.head = nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4)
        self.head.register_forward_hook(lambda module, args, output: output)

    def forward(self, x):
        return self.head(self.act(self.inp(x)))

def build():
    torch.manual_seed(0)
    return Net()
'''


def test_fold_writes_the_folded_weights_when_no_code_can_be_written(run_cli, model_file, tmp_path):
    """A layer with a forward hook cannot be rebuilt by generated code; --fold still gives the
    user their folded weights (and says why model.py is missing) instead of "use --fold"."""
    path = model_file(HOOKED_MODEL)
    out = tmp_path / "fixed"
    without = run_cli("fix", f"{path}:build", "-o", str(out), "--input-shape", "8,16")
    assert without.exit_code == 2 and "use --fold" in without.stderr and not out.exists()
    result = run_cli("fix", f"{path}:build", "-o", str(out), "--input-shape", "8,16", "--fold")
    assert result.exit_code == 0 and "folded weights and the plan only" in result.stderr, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["folded_state_dict.pt", "renorm.json"]
    assert "hooks" in json.loads((out / "renorm.json").read_text())["code"]
    import importlib.util

    spec = importlib.util.spec_from_file_location("hooked_model", path)
    user = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(user)
    user.build().load_state_dict(torch.load(out / "folded_state_dict.pt", weights_only=True), strict=True)
    refused = run_cli("check", str(out))
    assert refused.exit_code == 2 and "holds only folded weights" in refused.stderr


ATTENTION_MODEL = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.act = nn.Linear(16, 32), nn.Tanh()
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True, kdim=16)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        h = self.act(self.inp(x))
        return self.head(self.attn(h, x, h)[0])

def build():
    torch.manual_seed(0)
    return Net()
'''


def test_a_multihead_attention_is_rebuilt_from_its_settings(run_cli, model_file, tmp_path):
    """nn.MultiheadAttention's repr shows none of its settings: generated code builds it from
    those it keeps (a key width of its own here), and the written model computes what the
    renorm-node model does."""
    path = model_file(ATTENTION_MODEL)
    out = tmp_path / "fixed"
    result = run_cli("fix", f"{path}:build", "-o", str(out), "--input-shape", "8,10,16")
    assert result.exit_code == 0, result.stderr
    assert "MultiheadAttention(embed_dim=32, kdim=16, vdim=32, num_heads=4" in (out / "model.py").read_text()
    from initlint.load import load_target

    written, user = load_target(str(out)).model.eval(), load_target(f"{path}:build").model
    expected = initlint.fix(user, input_shapes=[(8, 10, 16)]).eval()
    x = torch.randn(8, 10, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(written(x), expected(x))


def test_a_layer_its_settings_cannot_rebuild_is_refused():
    """Built from its settings, an attention without biases would have them: its parameters'
    shapes tell, and the layer is refused rather than rebuilt otherwise."""
    with pytest.raises(CodeNotWritable, match="cannot write code that rebuilds layer 'attn'"):
        constructor("attn", nn.MultiheadAttention(32, 4, bias=False))
    assert constructor("attn", nn.MultiheadAttention(32, 4)).startswith("torch.nn.MultiheadAttention(embed_dim=32")


def _strided_cnn() -> nn.Sequential:
    """Four stride-2 convolutions: an inferred 32x32 input leaves 2x2 feature maps."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()]
    for _ in range(4):
        layers += [nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_fix_warns_when_it_planned_at_inferred_sizes_with_tiny_feature_maps():
    inferred = run_fix(_strided_cnn(), (), CheckOptions(), ModelSource()).summary("out")
    assert "planned at inferred inputs" in inferred and "feature maps shrink to 2 at 8" in inferred
    given = run_fix(_strided_cnn(), (), CheckOptions(input_shapes=[(8, 3, 64, 64)]), ModelSource()).summary("out")
    assert "planned at inferred" not in given


class _Recurrent(nn.Module):
    """A two-layer LSTM at PyTorch's default init: its second layer reads the first's small
    output, so its own is at about 0.02 of the input's std (IL101), inside a module whose
    gates no renorm constant reaches."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(16, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0][:, -1])


def test_fix_names_what_it_leaves_unrepaired():
    torch.manual_seed(0)
    result = run_fix(_Recurrent(), (), CheckOptions(input_shapes=[(8, 10, 16)]), ModelSource())
    assert any(fault.startswith("IL101 at ") for fault in result.still_found)
    summary = result.summary("out")
    assert "not repaired: the fixed model still has" in summary and "none needed" not in summary
    assert result.plan_document("model.py:build")["still_found"] == list(result.still_found)
    healthy = run_fix(default_mlp(nn.Tanh, depth=4), (), CheckOptions(), ModelSource())
    assert healthy.still_found == () and "not repaired" not in healthy.summary("out")


def test_a_batch_of_one_is_planned_on_several_samples():
    """Planned on one sample, the bundled SE-ResNet's squeeze-excitation gates took constants
    fitted to the spread of one vector across channels, and three of them came out pinned
    (IL401) when the fixed model was checked on eight. A given batch is raised to
    ``MIN_BATCH`` (dim 0 of the inputs that share the first's, by shape or by name), and fix
    says so."""
    from initlint.api import MIN_BATCH
    from initlint.load import load_target

    model = load_target(f"{Path(__file__).resolve().parent.parent / 'examples' / 'se_resnet_lsuv.py'}:build").model
    result = run_fix(model, (), CheckOptions(input_shapes=[(1, 3, 32, 32)]), ModelSource())
    assert result.analysed.inputs.batch_size == MIN_BATCH
    assert "probed on a batch of 8 where 1 was given" in result.summary("fixed")
    checked = initlint.check(result.patched, input_shapes=[(8, 3, 32, 32)])
    assert not [f for f in checked.findings if f.severity != "info"], checked.findings
    named = run_fix(nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 2)), (),
                    CheckOptions(inputs={"input": "2,6:float32"}), ModelSource())
    assert [s.shape for s in named.analysed.inputs.specs] == [(8, 6)]


def test_an_activation_whose_input_barely_varies_is_renormed_at_that_spread():
    """A LayerNorm with a gain of 1e-5 hands the SiLU inputs of std ~1e-5, where SiLU is
    x / 2 + x^2 / 4 + ...: its output std is half its input's, so the constants scale by about
    2e5. The spread was rounded to 4 decimals, to 0, and the quadrature of a constant refused
    the model ("SiLU() is constant on Gaussian inputs"; Hugging Face's MobileViT with --fold)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.SiLU(), nn.Linear(8, 4))
    nn.init.constant_(model[1].weight, 1e-5)
    plan = run_fix(model, (), CheckOptions(input_shapes=[(64, 8)]), ModelSource(), method="renorm").plan
    (silu,) = [r for r in plan if r.module == "2"]
    assert silu.verified and 1.5e5 < silu.scale < 2.5e5, silu

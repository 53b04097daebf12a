"""Kernel shaping (``initlint fix --method dks``): the constants against independent computations,
30-layer stacks that the per-activation renorm leaves chaotic or collapsed, and the residual
stream's budget."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import initlint
from initlint.api import CheckOptions, ModelSource
from initlint.fixer import run_fix
from initlint.kernel_shaping import BODY_SLOPE, layer_slope, shape


def test_a_shifted_relu_meets_its_slope_by_the_closed_form():
    """For f = relu(z + b): E f' ^2 = Phi(b), E f = b Phi + phi, E f^2 = (b^2 + 1) Phi + b phi, so
    C'(1) = Phi(b) / Var f. The quadrature's slope at the solved shift must match that to 1e-3
    (its documented error is 3e-4), and the output constants must centre and normalize it."""
    target = layer_slope(30)
    shaping = shape(nn.ReLU(), target)
    b = shaping.in_shift
    cdf, pdf = 0.5 * (1 + math.erf(b / math.sqrt(2))), math.exp(-b * b / 2) / math.sqrt(2 * math.pi)
    mean, second = b * cdf + pdf, (b * b + 1) * cdf + b * pdf
    assert shaping.in_scale == 1 and b > 0
    assert cdf / (second - mean * mean) == pytest.approx(target, abs=1e-3)
    assert shaping.out_shift == pytest.approx(-mean, abs=1e-4)
    assert shaping.out_scale == pytest.approx(1 / math.sqrt(second - mean * mean), rel=1e-4)


def test_an_in_place_activation_is_shaped_as_its_out_of_place_twin():
    """``nn.ReLU(inplace=True)`` (torchvision's ResNets) would write into the quadrature's input,
    a leaf that needs a gradient: the constants are those of ``nn.ReLU()``. (Here and below the
    layers keep their directions, so no looks-linear pairs make the ReLUs linear instead.)"""
    target = layer_slope(30)
    assert shape(nn.ReLU(inplace=True), target) == shape(nn.ReLU(), target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(inplace=True), nn.Linear(8, 8), nn.ReLU(inplace=True),
                          nn.Linear(8, 2))
    plan = run_fix(model, (), CheckOptions(input_shapes=[(64, 8)]), ModelSource(), keep_directions=True).plan
    assert [r.placement for r in plan if r.site == "activation"] == ["before", "after"] * 2


class _FunctionalStack(nn.Module):
    """Linear layers with activations called as functions with options, as model code writes them."""

    def __init__(self, call) -> None:
        super().__init__()
        self.layers, self.call = nn.ModuleList(nn.Linear(8, 8) for _ in range(3)), call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self.call(layer(x))
        return self.layers[-1](x)


@pytest.mark.parametrize("call, module", [
    (lambda x: nn.functional.relu(x), nn.ReLU()),  # traced with inplace=False
    (lambda x: nn.functional.leaky_relu(x, 0.2), nn.LeakyReLU(0.2)),
    (lambda x: nn.functional.gelu(x, approximate="tanh"), nn.GELU(approximate="tanh")),
    (lambda x: x.tanh(), nn.Tanh()),
    (lambda x: nn.functional.celu(x, 0.5), nn.CELU(0.5)),
], ids=["relu", "leaky_relu 0.2", "gelu tanh", "tensor method", "celu 0.5"])
def test_an_activation_called_as_a_function_is_shaped_as_its_module(call, module):
    """The same weights with the activation as a module: the same constants, before and after."""
    torch.manual_seed(0)
    functional = _FunctionalStack(call)
    as_module = copy.deepcopy(functional)
    as_module.call = module
    options = CheckOptions(input_shapes=[(64, 8)])
    plans = [[(r.placement, r.scale, r.bias, r.source)
              for r in run_fix(m, (), options, ModelSource(), keep_directions=True).plan
              if r.site == "activation"] for m in (functional, as_module)]
    assert [p[0] for p in plans[1]] == ["before", "after"] * 2
    assert plans[0] == plans[1]


def test_a_call_is_read_as_a_module_only_where_the_module_computes_it():
    """Exported calls carry their options by position (``aten.leaky_relu(x, 0.2)``); a module
    that computes something else than the call (a sigmoid read with tanh's namesake, an ELU
    whose call has options ELU does not take) gives no module, and the probe's constants."""
    from initlint.graph import _namesake, activation_module_of

    class Calls(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.leaky_relu(x, 0.2) + torch.sigmoid(x) + torch.ops.aten.elu(x, 1.0, 2.0, 1.0)

    exported = torch.export.export(Calls(), (torch.randn(4, 3),)).graph_module
    calls = {str(n.target): n for n in exported.graph.nodes if n.op == "call_function"}
    leaky = activation_module_of(calls["aten.leaky_relu.default"], exported)
    assert isinstance(leaky, nn.LeakyReLU) and leaky.negative_slope == 0.2
    assert isinstance(activation_module_of(calls["aten.sigmoid.default"], exported), nn.Sigmoid)
    assert _namesake(calls["aten.sigmoid.default"], nn.Tanh) is None
    assert activation_module_of(calls["aten.elu.default"], exported) is None  # scale 2: no nn.ELU


@pytest.mark.parametrize("activation, derivative", [
    (np.tanh, lambda x: 1 / np.cosh(x) ** 2),
    (lambda x: 1 / (1 + np.exp(-x)), lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
], ids=["tanh", "sigmoid"])
def test_a_shaped_saturating_activation_has_mean_0_std_1_and_the_target_slope(activation, derivative):
    """Checked with numpy's Gauss-Hermite rule (200 nodes, exact to ~1e-12 for these smooth
    functions), independent of the Simpson grid and autograd that initlint uses."""
    torch_activation = nn.Tanh() if activation is np.tanh else nn.Sigmoid()
    target = layer_slope(30)  # 1.027, below the sigmoid's own 1.034
    s = shape(torch_activation, target)
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    weights = weights / weights.sum()
    psi = s.out_scale * (activation(s.in_scale * nodes + s.in_shift) + s.out_shift)
    slope = (weights * (s.out_scale * s.in_scale * derivative(s.in_scale * nodes + s.in_shift)) ** 2).sum()
    assert s.in_shift == 0 and 0 < s.in_scale < 1  # scaled toward its linear middle
    assert (weights * psi).sum() == pytest.approx(0, abs=1e-6)
    assert (weights * psi ** 2).sum() == pytest.approx(1, abs=1e-4)
    assert slope == pytest.approx(target, abs=1e-4)


DEPTH, WIDTH = 30, 128
HEAD = str(2 * DEPTH)
"""The path of the stack's last Linear, the same in the user's model and in the fixed GraphModule."""


def _stack(activation: type[nn.Module], depth: int = DEPTH, width: int = WIDTH) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [layer for _ in range(depth) for layer in (nn.Linear(width, width), activation())]
    return nn.Sequential(*layers, nn.Linear(width, width))


def _kernel_and_gradient(model: nn.Module, width: int = WIDTH, batch: int = 256) -> tuple[float, float, float]:
    """(the input gradient's std / that of the gradient at the body's end (the head's input),
    output cosine of inputs at cosine 0, at 0.9). Pairs are exact: b = c a + sqrt(1 - c^2) z
    with z orthogonal to a, both of norm sqrt(width)."""
    generator = torch.Generator().manual_seed(1)
    model = model.eval()
    body_end = []
    model.get_submodule(HEAD).register_forward_hook(lambda module, args, output: body_end.append(args[0]))

    def unit(v: torch.Tensor) -> torch.Tensor:
        return v / v.norm(dim=1, keepdim=True) * math.sqrt(width)

    def output_cosine(c: float) -> float:
        a = unit(torch.randn(batch, width, generator=generator))
        z = torch.randn(batch, width, generator=generator)
        z = unit(z - (z * a).sum(1, keepdim=True) / width * a)
        with torch.no_grad():
            return nn.functional.cosine_similarity(model(a), model(c * a + math.sqrt(1 - c * c) * z)).mean().item()

    x = torch.randn(batch, width, generator=generator, requires_grad=True)
    y = model(x)
    gradient, at_end = torch.autograd.grad(y, [x, body_end[-1]], torch.randn(y.shape, generator=generator))
    return gradient.std().item() / at_end.std().item(), output_cosine(0.0), output_cosine(0.9)


def test_relu6_is_shifted_toward_the_middle_of_its_linear_range_as_far_as_relu():
    """ReLU6 has a kink at 0 and no linear side (a shift of 8 saturates it at 6), so neither a
    shift toward a linear side nor a small scale makes it linear: the shift goes toward the
    middle of [0, 6]. Its clip lies 6 - 1.8 = 4.2 stds past the shift that ReLU needs, where
    N(0, 1) puts 1.3e-5 of its mass, so the two shifts agree to the quadrature's precision."""
    target = layer_slope(30)
    relu6, relu = shape(nn.ReLU6(), target), shape(nn.ReLU(), target)
    assert relu6.in_scale == 1 and relu6.slope == pytest.approx(target, abs=1e-6)
    assert relu6.in_shift == pytest.approx(relu.in_shift, abs=1e-3)


@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU, nn.PReLU, nn.ReLU6], ids=["tanh", "relu", "prelu", "relu6"])
def test_a_30_layer_stack_after_fix_keeps_its_kernel_and_its_gradient(activation):
    """The body's C'(1) is 2.25, so cosine 0.9 maps to about 1 - 2.25 * 0.1 = 0.78 (>= 0.7),
    cosine 0 stays 0 (<= 0.3: each layer's C(0) = 0), and gradients grow through the body by
    about sqrt(2.25) = 1.5 (within 1.5x either way: 1.42 measured at width 256). The folded
    model computes the same function (so it has the same kernel and gradients), and the checks
    of both are clean. A PReLU (a float32 slope of its own, 0.25) is shaped as the leaky ReLU it
    computes; before its slope was cast for the float64 grids, it took the probe's constants and
    stayed collapsed (orthogonal inputs at cosine 0.97, IL101 and IL105 after fix). ReLU6
    took no shaping before it was shifted toward its middle: at width 256, cosine 0.98 and IL101."""
    model, shapes = _stack(activation), [(256, WIDTH)]
    fixed, folded = initlint.fix(model, input_shapes=shapes), initlint.fix(model, fold=True, method="dks",
                                                                           input_shapes=shapes)
    ratio, orthogonal, close = _kernel_and_gradient(fixed)
    assert 1 / 1.5 <= ratio <= 1.5, ratio
    assert orthogonal <= 0.3 and close >= 0.7, (orthogonal, close)
    x = torch.randn(64, WIDTH, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = fixed.eval()(x)
        assert (folded.eval()(x) - expected).abs().max() <= 1e-4 * expected.std()
    assert initlint.check(fixed, input_shapes=shapes).codes() == []
    assert initlint.check(folded, input_shapes=shapes).codes() == []


def test_the_default_fold_of_a_relu_stack_keeps_its_kernel_and_its_gradient():
    """With --fold (dks-scale), looks-linear pairs keep the chain linear at init, and the last
    ReLU, which only the head reads, is centred, its shift folded into the head's bias: its mean
    would reach every sample's logits alike (orthogonal inputs at cosine 0.46 at the output
    before). Its scale still goes into the layer before it, so the gradient is the pairs'
    (about 1 through the linear chain, within the issue's 1.5x)."""
    model, shapes = _stack(nn.ReLU), [(256, WIDTH)]
    result = run_fix(model, (), CheckOptions(input_shapes=shapes), ModelSource(), fold=True)
    (last,) = [r for r in result.plan if r.module == str(2 * DEPTH - 1)]
    assert last.target.startswith("mean 0, std 1") and last.bias < 0 and result.fold_error < 1e-4
    torch.testing.assert_close(result.folded.model.get_submodule(str(2 * DEPTH - 2)).weight,
                               result.patched.get_submodule(str(2 * DEPTH - 2)).weight * last.scale)
    ratio, orthogonal, close = _kernel_and_gradient(result.folded.model)
    assert 1 / 1.5 <= ratio <= 1.5 and orthogonal <= 0.3 and close >= 0.7, (ratio, orthogonal, close)
    assert initlint.check(result.folded.model, input_shapes=shapes).codes() == []


class _PooledHead(nn.Module):
    """Three conv -> ReLU layers (deep enough that the ReLUs take no shaping of their own), an
    average over positions, a Linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(*(m for i in range(3) for m in (nn.Conv2d(3 if i == 0 else 16, 16, 3), nn.ReLU())))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


def _headless_stack() -> nn.Sequential:
    model = _stack(nn.ReLU, depth=4)
    model[-1] = nn.Linear(WIDTH, WIDTH, bias=False)
    return model


def _tied_head_stack() -> nn.Sequential:
    model = _stack(nn.ReLU, depth=4)
    model[-1].weight = model[0].weight
    return model


@pytest.mark.parametrize("build, shape, module", [(_headless_stack, (256, WIDTH), "7"),
                                                   (_tied_head_stack, (256, WIDTH), "7"),
                                                   (_PooledHead, (8, 3, 16, 16), "body.5")],
                         ids=["a head without a bias", "a tied head", "a pool before the head"])
def test_the_last_relu_stays_uncentred_where_a_shift_would_not_fold_or_would_move_the_logits(build, shape, module):
    """A shift before a head without a bias, or before a tied head (which takes no fold), would
    not fold. Through a pool, the ReLU's mean is most of what the logits vary by across classes
    (a pool shrinks the rest: torchvision's ResNet-18 logits went from std 0.47 to 0.08,
    centred). The ReLU keeps its scale alone, as the other ReLUs do, and nothing is left out of
    the plan."""
    result = run_fix(build(), (), CheckOptions(input_shapes=[shape]), ModelSource(), fold=True)
    (last,) = [r for r in result.plan if r.module == module]
    assert last.target == "std 1" and last.bias == 0 and not result.left_out


@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU], ids=["tanh", "relu"])
def test_output_constants_alone_leave_the_stack_chaotic_or_collapsed(activation):
    """What kernel shaping is for: with ``--method renorm`` the same stacks lose their kernel,
    tanh to chaos (close inputs decorrelate), ReLU to collapse (orthogonal inputs align). Its
    judge ignores the kernel and gradient rules, which would have it decline those constants."""
    fixed = initlint.fix(_stack(activation), method="renorm", input_shapes=[(256, WIDTH)], ignore=["IL105", "IL501"])
    _, orthogonal, close = _kernel_and_gradient(fixed)
    assert close < 0.5 if activation is nn.Tanh else orthogonal > 0.9, (orthogonal, close)


def test_the_whole_body_gets_the_dks_slope():
    assert layer_slope(30) ** 30 == pytest.approx(BODY_SLOPE)
    assert layer_slope(0) == BODY_SLOPE


def test_without_a_method_fix_shapes_kernels_and_fold_shapes_them_by_scale_alone():
    """Folded, kernel shaping's centring shift after a ReLU-like activation becomes the next
    layer's bias and leaves it inputs of mean ~2, which Adam trains badly
    (benchmarks/train_digits.py); so with --fold the default is dks-scale: a tanh is shaped by
    its input scale as without --fold, a ReLU, which only a shift shapes, gets the renorm
    method's output constants. renorm.json says which method was used."""
    relu, tanh = _stack(nn.ReLU, depth=8), _stack(nn.Tanh, depth=30)
    shaped = run_fix(relu, (), CheckOptions(), ModelSource(), keep_directions=True)
    assert shaped.method == "dks" and any(r.placement == "before" and r.bias != 0 for r in shaped.plan)
    folded = run_fix(relu, (), CheckOptions(), ModelSource(), fold=True, keep_directions=True)
    assert folded.method == "dks-scale" and all(r.placement == "after" for r in folded.plan)
    assert folded.plan_document("t")["method"] == "dks-scale"
    by_scale = {r.node: r.scale for r in run_fix(tanh, (), CheckOptions(), ModelSource(), fold=True).plan
                if r.placement == "before"}
    assert by_scale == {r.node: r.scale for r in run_fix(tanh, (), CheckOptions(), ModelSource()).plan
                        if r.placement == "before"}
    assert len(by_scale) == 30 and all(scale < 1 for scale in by_scale.values())


def test_an_unknown_method_is_refused_before_the_probe():
    with pytest.raises(initlint.InitlintError, match="unknown fix method 'lsuv'; use one of dks, dks-scale, renorm"):
        initlint.fix(_stack(nn.Tanh, depth=1), method="lsuv")


class _PreNormBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(width), nn.MultiheadAttention(width, 4, batch_first=True)
        self.ln2, self.fc1, self.act, self.fc2 = nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(), \
            nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class _PreNormTransformer(nn.Module):
    def __init__(self, width: int = 64, depth: int = 6, zero_last: bool = False) -> None:
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.blocks = nn.Sequential(*[_PreNormBlock(width) for _ in range(depth)])
        self.ln, self.head = nn.LayerNorm(width), nn.Linear(width, 10)
        if zero_last:  # zero-initialized branches, as Fixup / SkipInit / zero-gamma inits leave them
            for block in self.blocks:
                nn.init.zeros_(block.fc2.weight), nn.init.zeros_(block.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln(self.blocks(self.inp(x))))


def _stream_std(model: nn.Module) -> float:
    """The residual stream's std at the end of the body (before the final norm)."""
    seen = []
    model.get_submodule("blocks.5").register_forward_hook(lambda module, args, output: seen.append(output.std()))
    with torch.no_grad():
        model.eval()(torch.randn(16, 8, 8, generator=torch.Generator().manual_seed(3)))
    return seen[-1].item()


def test_residual_branches_share_a_budget_so_the_stream_grows_at_most_2x():
    """The body has 12 branches (6 attention, 6 MLP); each MLP branch's last Linear gets the std
    sqrt(2 ** (2/12) - 1) = 0.34 of the stream it joins (nn.MultiheadAttention's weights are not
    rescaled), so the stream ends within 2x of the original's (an LSUV-like std 1 per branch
    would grow it as sqrt(1 + 12) = 3.6x)."""
    torch.manual_seed(0)
    model = _PreNormTransformer()
    result = run_fix(model, (), CheckOptions(input_shapes=[(16, 8, 8)]), ModelSource(), fold=True, method="dks")
    shares = [r for r in result.plan if "residual stream" in r.target]
    assert len(shares) == 6 and all(r.verified for r in shares)
    assert 0.5 <= _stream_std(result.folded.model) / _stream_std(model) <= 2
    assert result.fold_error < 1e-4


class _ParallelBlock(nn.Module):
    """GPT-NeoX's parallel residual: ``x + dropout(mlp_a(ln_a(x))) + dropout(mlp_b(ln_b(x)))``,
    the two branches summed before they join the stream."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln_a, self.ln_b = nn.LayerNorm(width), nn.LayerNorm(width)
        self.mlp_a, self.mlp_b = (nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
                                  for _ in range(2))
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.mlp_a(self.ln_a(x))) + self.drop(self.mlp_b(self.ln_b(x))) + x


class _ClassTokenTransformer(_PreNormTransformer):
    """A ViT's start: a class token concatenated before the embedded tokens; the head reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.inp(x)
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)
        return self.head(self.ln(self.blocks(tokens))[:, 0])


@pytest.mark.parametrize("start", ["sequential", "parallel", "class token"])
def test_a_small_embedding_keeps_its_scale_and_the_stream_stays_within_2x(start):
    """Hugging Face models draw every Linear from N(0, 0.02^2) with zero biases (their
    initializer range), so the stream starts small. Only norms read that stream, so the
    embedding keeps its scale (rescaled to std 1, a Llama's stream ended 27x the original's)
    and the branches take their share of the stream as it is. A parallel block adds two
    branches at once (through dropout): each takes 1/sqrt(2) of the block's share, so the
    stream still grows at most 2x over the body, and ends within 2x of the original's. A
    class token concatenated beside the embedded tokens (a ViT's) changes none of that."""
    torch.manual_seed(0)
    model = _ClassTokenTransformer() if start == "class token" else _PreNormTransformer()
    if start == "parallel":
        model.blocks = nn.Sequential(*[_ParallelBlock(64) for _ in range(6)])
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.02), nn.init.zeros_(layer.bias)
    embedding = model.inp.weight.clone()
    result = run_fix(model, (), CheckOptions(input_shapes=[(16, 8, 8)]), ModelSource(), fold=True)
    (inp,) = [r for r in result.plan if r.module == "inp"]
    assert inp.target.startswith("none: only normalizations read it")
    torch.testing.assert_close(result.folded.model.inp.weight, embedding)
    shares = [r for r in result.plan if "residual stream" in r.target]
    assert len(shares) == (12 if start == "parallel" else 6)
    assert 0.5 <= _stream_std(result.folded.model) / _stream_std(model) <= 2
    assert result.fold_error < 1e-4


def test_a_zero_initialized_branch_stays_zero():
    torch.manual_seed(0)
    result = run_fix(_PreNormTransformer(zero_last=True), (), CheckOptions(input_shapes=[(16, 8, 8)]), ModelSource(),
                     fold=True, method="dks")
    for block in result.folded.model.blocks:
        assert not block.fc2.weight.any() and not block.fc2.bias.any()


@pytest.mark.parametrize("method", ["renorm", "dks-scale"])
def test_a_relu_its_bias_killed_is_recentred_and_the_fold_is_exact(method):
    """Default weights give the first layer pre-activations of std 1/sqrt(3) = 0.58; a bias of
    -3 puts them 5 stds down, where a ReLU fires for under 1e-6 of inputs. Rescaling alone keeps
    it dead; the renorm method shifts its input to mean 0 first, as kernel shaping's input
    constants standardize it (folded into the bias), so it fires for half of them, as a centred
    symmetric input gives. The other ReLU's input is centred already: nothing shifts it. With
    dks-scale the first Linear's units come in mirrored pairs (u - 3, 3 - u), whose means cancel
    where the ReLU's input is measured: the layer cancels them itself, per half, in its bias
    (before, it took the offset for signal and was scaled 0.33x: IL101 on the result)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        model[0].bias.fill_(-3.0)
    result = run_fix(model, (), CheckOptions(input_shapes=[(256, 32)]), ModelSource(), fold=True, method=method)
    shifts = [r for r in result.plan if r.placement == "before" and r.bias]
    if method == "renorm":
        assert [r.module for r in shifts] == ["1"] and shifts[0].verified
    else:
        (first,) = [r for r in result.plan if r.module == "0"]
        assert shifts == [] and first.pairing.mirrored and first.verified
        assert first.channel_bias[0] == pytest.approx(-first.channel_bias[-1]) and first.channel_bias[0] > 4
    assert result.still_found == ()
    x = torch.randn(4096, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        firing = (result.folded.model[:2](x) > 0).float().mean().item()
    assert 0.4 <= firing <= 0.6, firing
    assert result.fold_error < 1e-4

"""Looks-linear pairs in ``fix --fold``: mirrored rows, paired columns, a body linear at init."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import initlint
from initlint.api import CheckOptions, ModelSource
from initlint.directions import Pairing, reads_pairs
from initlint.fixer import run_fix
from initlint.looks_linear import odd_part_is_linear

WIDTH, DEPTH = 64, 12


@pytest.mark.parametrize("module", [nn.ReLU(), nn.GELU(), nn.GELU(approximate="tanh"), nn.SiLU(), nn.Softplus(),
                                    nn.Hardswish(), nn.LeakyReLU(0.2), nn.PReLU(), nn.ReLU6()], ids=str)
def test_an_activation_whose_odd_part_is_linear_is_recognised(module):
    """f(u) - f(-u) = k u for |u| <= 6 (six stds of a rescaled layer's output): ReLU-like (x
    max(0, .), PReLU's k = 1 + its slope, a float32 parameter, ReLU6 up to its clip at 6),
    self-gated (x g(x) with g(x) + g(-x) = 1), and softplus (log(1 + e^x) - log(1 + e^-x) = x)."""
    assert odd_part_is_linear(module)


@pytest.mark.parametrize("module", [nn.Tanh(), nn.Sigmoid(), nn.ELU(), nn.Hardtanh(0, 3), nn.Mish(), nn.SELU()],
                         ids=str)
def test_an_activation_whose_odd_part_bends_is_not(module):
    """tanh is odd and bends; ELU's and SELU's negative side saturates; a ReLU clipped at 3
    bends within the six stds; Mish is not self-gated (tanh(softplus(x)) + tanh(softplus(-x)) != 1)."""
    assert not odd_part_is_linear(module)


def _widening_mlp(activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """A first Linear that doubles the width, as the digits MLP's 64 -> 128, then square layers."""
    torch.manual_seed(0)
    layers = [nn.Linear(WIDTH // 2, WIDTH), activation()]
    for _ in range(DEPTH - 1):
        layers += [nn.Linear(WIDTH, WIDTH), activation()]
    return nn.Sequential(*layers, nn.Linear(WIDTH, 10))


def _body_end(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the last ReLU-like activation, the end of the paired chain."""
    seen = []
    last = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.GELU, nn.ReLU6))][-1]
    handle = last.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    return seen[-1]


@pytest.mark.parametrize("activation", [nn.ReLU, nn.GELU, nn.ReLU6])
def test_the_folded_chain_is_affine_at_init(activation):
    """Through mirrored pairs each activation passes k u on, so the body up to the last one is an
    affine map of the input: g((x1 + x2) / 2) = (g(x1) + g(x2)) / 2, to float precision. With the
    layers' own directions (no pairs) the same check fails by a wide margin."""
    x1, x2 = torch.randn(2, 128, WIDTH // 2, generator=torch.Generator().manual_seed(1))

    def nonlinearity(model: nn.Module) -> float:
        mid = _body_end(model, (x1 + x2) / 2)
        return ((mid - (_body_end(model, x1) + _body_end(model, x2)) / 2).std() / mid.std()).item()

    shapes = [(256, WIDTH // 2)]
    paired = initlint.fix(_widening_mlp(activation), fold=True, input_shapes=shapes)
    unpaired = initlint.fix(_widening_mlp(activation), fold=True, input_shapes=shapes, keep_directions=True)
    assert nonlinearity(paired) < 1e-4
    assert nonlinearity(unpaired) > 0.1


def test_the_folded_weights_mirror_rows_and_pair_columns():
    """Each Linear before a ReLU that a body Linear reads mirrors its rows and bias; each one
    after such a ReLU pairs its columns. The head is no site of the plan, so the last ReLU has no
    partner: the last body Linear pairs its columns only, the head neither."""
    folded = initlint.fix(_widening_mlp(), fold=True, input_shapes=[(256, WIDTH // 2)])
    *body, head = [m for m in folded.modules() if isinstance(m, nn.Linear)]
    half = WIDTH // 2
    for index, layer in enumerate(body):
        mirrored = torch.equal(layer.weight[:half], -layer.weight[half:]) and torch.equal(
            layer.bias[:half], -layer.bias[half:])
        assert mirrored == (index < len(body) - 1), index
        assert reads_pairs(layer) == (index > 0), index
    assert not reads_pairs(head)


def test_the_folded_relu_stack_keeps_its_kernel_and_checks_clean():
    """Linear at init, the paired chain maps cosine c to c; only the last ReLU, which feeds the
    head and has no partner layer, bends it. Before the pairs, its renorm constants left the
    stack collapsed (orthogonal inputs at cosine 0.98, IL105)."""
    model, shapes = _widening_mlp(), [(256, WIDTH // 2)]
    result = run_fix(model, (), CheckOptions(input_shapes=shapes), ModelSource(), fold=True)
    assert result.method == "dks-scale" and result.fold_error < 1e-4
    assert sum(r.pairing is not None for r in result.plan) == DEPTH
    a, z = torch.randn(2, 256, WIDTH // 2, generator=torch.Generator().manual_seed(2))
    folded = result.folded.model.eval()
    with torch.no_grad():
        orthogonal = nn.functional.cosine_similarity(_body_end(folded, a), _body_end(folded, z)).mean().item()
    assert abs(orthogonal) < 0.2  # 256 pairs of 64-dim vectors: the mean cosine's noise is ~0.01
    assert initlint.check(folded, input_shapes=shapes).codes() == []


class _PooledCNN(nn.Module):
    """Convs with ReLUs, a max pool in the middle, an average over positions into a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 16, 16, 3, padding=1) for i in range(4))
        self.hidden, self.head = nn.Linear(16, 16), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, conv in enumerate(self.convs):
            x = torch.relu(conv(x))
            if index == 1:
                x = nn.functional.max_pool2d(x, 2)
        return self.head(torch.relu(self.hidden(x.mean((2, 3)))))


def test_conv_channels_pair_through_an_average_but_not_through_a_max_pool():
    """A conv's channels pair as a Linear's features do, also through an average over positions
    into a Linear (mean(f(u)) - mean(f(-u)) = k mean(u)); a max pool of the pair is not the max of
    their difference, so the convs on either side of it are not paired across it."""
    torch.manual_seed(0)
    result = run_fix(_PooledCNN(), (), CheckOptions(input_shapes=[(16, 3, 16, 16)]), ModelSource(), fold=True)
    assert {r.module: r.pairing for r in result.plan if r.pairing} == {
        "convs.0": Pairing(mirrored=True), "convs.1": Pairing(paired=True),
        "convs.2": Pairing(mirrored=True), "convs.3": Pairing(mirrored=True, paired=True),
        "hidden": Pairing(paired=True)}
    assert result.fold_error < 1e-4


class _FlattenedCNN(nn.Module):
    """Two conv -> ReLU layers at 4x4, flattened from dim 1 (by ``torch.flatten`` or
    ``nn.Flatten``) into a Linear -> ReLU, and a head."""

    def __init__(self, module: bool) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 16, 16, 3, padding=1) for i in range(2))
        self.flatten = nn.Flatten() if module else None
        self.hidden, self.head = nn.Linear(16 * 4 * 4, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = torch.relu(conv(x))
        x = self.flatten(x) if self.flatten is not None else torch.flatten(x, 1)
        return self.head(torch.relu(self.hidden(x)))


@pytest.mark.parametrize("module", [False, True], ids=["torch.flatten", "nn.Flatten"])
def test_conv_channels_pair_through_a_flatten_into_a_linear(module):
    """Flattened from dim 1, each channel's positions stay together, so the channel halves are
    the Linear's column halves."""
    torch.manual_seed(0)
    result = run_fix(_FlattenedCNN(module), (), CheckOptions(input_shapes=[(64, 3, 4, 4)]), ModelSource(), fold=True)
    assert {r.module: r.pairing for r in result.plan if r.pairing} == {
        "convs.0": Pairing(mirrored=True), "convs.1": Pairing(mirrored=True, paired=True),
        "hidden": Pairing(paired=True)}
    assert result.fold_error < 1e-4


def test_transposed_convs_take_no_pairs():
    """A transposed conv's weight holds its input channels first, so mirrored rows would pair
    its inputs instead of its outputs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.ConvTranspose2d(4, 8, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10))
    result = run_fix(model, (), CheckOptions(input_shapes=[(16, 4, 8, 8)]), ModelSource(), fold=True)
    assert not any(r.pairing for r in result.plan)  # the last conv's reader is the head, no site
    assert result.fold_error < 1e-4


class _DeepBranch(nn.Module):
    """``x + outer(relu(middle(relu(inner(x)))))``: two pairable chains, both in the branch."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.middle, self.outer = (nn.Linear(WIDTH, WIDTH) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.outer(torch.relu(self.middle(torch.relu(self.inner(x)))))


def test_a_chain_in_a_residual_branch_and_the_renorm_node_method_take_no_pairs():
    """Pairs are measured to help plain Linear chains folded. A chain in a residual branch (its
    layers reach the branch's input of the add, not the skip's) takes none, however deep the
    branch; the stem's chain before the stream forks does. The default renorm-node method
    (kernel shaping by shifts) takes none."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(WIDTH // 2, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), _DeepBranch(),
                          _DeepBranch(), nn.Linear(WIDTH, 10))
    folded = run_fix(model, (), CheckOptions(input_shapes=[(256, WIDTH // 2)]), ModelSource(), fold=True)
    assert {r.module: r.pairing for r in folded.plan if r.pairing} == {
        "0": Pairing(mirrored=True), "2": Pairing(paired=True)}
    nodes = run_fix(_widening_mlp(), (), CheckOptions(input_shapes=[(256, WIDTH // 2)]), ModelSource())
    assert nodes.method == "dks" and not any(r.pairing for r in nodes.plan)


class _SqueezeExcitation(nn.Module):
    """``x * sigmoid(expand(relu(reduce(mean of x over positions))))``: with 1x1 convs; with
    Linear layers on (batch, C), the squeeze an adaptive average pool viewed as (batch, C), the
    gate reshaped to (batch, C, 1, 1) and expanded as x, as in SENet's reference code
    ("senet"); or with the gate's channels shuffled on the way
    ("shuffled"), so that channel c no longer takes unit c's gate."""

    def __init__(self, channels: int, style: str = "conv") -> None:
        super().__init__()
        layer = (lambda n_in, n_out: nn.Conv2d(n_in, n_out, 1)) if style == "conv" else nn.Linear
        self.reduce, self.expand, self.style = layer(channels, channels // 4), layer(channels // 4, channels), style

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.style == "conv":
            return x * torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        b, c = x.shape[:2]
        squeezed = nn.functional.adaptive_avg_pool2d(x, 1).view(b, c)
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(squeezed))))
        if self.style == "shuffled":
            gate = gate.view(b, 2, c // 2).transpose(1, 2)
        return x * gate.reshape(b, c, 1, 1).expand_as(x)


class _GatedCNN(nn.Module):
    """``STAGES`` times conv -> ReLU -> squeeze-excitation, an average over positions, a head."""

    STAGES = 3

    def __init__(self, style: str = "conv") -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 16, 16, 3, padding=1) for i in range(self.STAGES))
        self.gates = nn.ModuleList(_SqueezeExcitation(16, style) for _ in range(self.STAGES))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, gate in zip(self.convs, self.gates):
            x = gate(torch.relu(conv(x)))
        return self.head(x.mean((2, 3)))


def _last_conv_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = model.convs[-1].register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    return seen[0].flatten(1)


@pytest.mark.parametrize("style", ["conv", "senet"])
def test_pairs_pass_through_a_squeeze_excitation_gate(style):
    """A conv's mirrored channels (u, -u) pass a ReLU and a gate whose layer duplicates its rows,
    so that both channels of a pair take the same gate g: the next conv reads (relu(u) - relu(-u))
    g = u g, centred where a ReLU's output has a mean of 0.7 of its std. The gate's layer is a
    1x1 conv, or a Linear whose gate is reshaped and broadcast over positions (SENet's code),
    whose scale (mean 1) then folds through the reshapes into the next conv. The last stage
    feeds the head, no site of the plan, and stays unpaired. Orthogonal inputs come out of the
    last conv at cosine 0.02-0.05 with the pairs, 0.33-0.58 with the layers' own directions,
    whose ReLU outputs share their mean (conv gates, models drawn from seeds 0-2)."""
    torch.manual_seed(0)
    shapes = [(64, 3, 8, 8)]
    result = run_fix(_GatedCNN(style), (), CheckOptions(input_shapes=shapes), ModelSource(), fold=True)
    pairings = {r.module: r.pairing for r in result.plan if r.pairing}
    for stage in range(_GatedCNN.STAGES - 1):
        assert pairings[f"convs.{stage}"].mirrored
        assert pairings[f"convs.{stage + 1}"].paired
        assert pairings[f"gates.{stage}.reduce"] == Pairing(mirrored=True, paired=True)
        assert pairings[f"gates.{stage}.expand"] == Pairing(paired=True, duplicated=True)
    assert not pairings.get(f"convs.{_GatedCNN.STAGES - 1}", Pairing()).mirrored
    assert result.fold_error < 1e-4 and not result.folded.unfolded
    assert f"(through {_GatedCNN.STAGES - 1} gate(s)" in result.summary("out")
    folded = result.folded.model
    for stage in range(_GatedCNN.STAGES - 1):
        expand = folded.gates[stage].expand
        assert torch.equal(expand.weight[:8], expand.weight[8:]) and torch.equal(expand.bias[:8], expand.bias[8:])

    a, z = torch.randn(2, 256, 3, 8, 8, generator=torch.Generator().manual_seed(1))

    def cosine(model: nn.Module) -> float:
        return nn.functional.cosine_similarity(_last_conv_output(model, a), _last_conv_output(model, z)).mean().item()

    unpaired = initlint.fix(_GatedCNN(style), fold=True, input_shapes=shapes, keep_directions=True)
    assert abs(cosine(folded)) < 0.15  # 256 pairs of 1024-dim vectors: the mean's noise is ~0.01
    assert cosine(unpaired) > 0.25


def test_a_gate_whose_channels_are_shuffled_takes_no_duplicated_rows():
    """A gate whose vector is reordered on its way to the product (a transpose) does not give
    channel c unit c's gate, so duplicated rows would not give a pair one gate: the stages stay
    unpaired, and the fold stays exact."""
    torch.manual_seed(0)
    result = run_fix(_GatedCNN("shuffled"), (), CheckOptions(input_shapes=[(64, 3, 8, 8)]), ModelSource(),
                     fold=True)
    pairings = {r.module: r.pairing for r in result.plan if r.pairing}
    assert not any(pairing.mirrored for module, pairing in pairings.items() if module.startswith("convs"))
    assert not any(pairing.duplicated for pairing in pairings.values())
    assert result.fold_error < 1e-4

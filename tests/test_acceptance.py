"""Acceptance tests for initlint, on models written here independently of the project's examples.

Each test builds its own model under a fixed ``torch.manual_seed`` and checks one acceptance
criterion through the public API ``initlint.check``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

import initlint

WIDTH = 128


def _mlp(depth: int, width: int, act: type[nn.Module], head: int | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), act()]
    if head is not None:
        layers.append(nn.Linear(width, head))
    return nn.Sequential(*layers)


def _tanh_stack(gain: float, depth: int = 50, width: int = 256) -> nn.Sequential:
    model = _mlp(depth, width, nn.Tanh)
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_normal_(layer.weight, gain=gain)
            nn.init.zeros_(layer.bias)
    return model


def test_deep_default_sigmoid_mlp_drifts():
    """Criterion 1: a deep default-init sigmoid MLP triggers IL101."""
    torch.manual_seed(0)
    model = _mlp(20, WIDTH, nn.Sigmoid)
    report = initlint.check(model, input_shapes=[(8, WIDTH)], seed=0)
    assert "IL101" in report.codes()


def test_deep_default_relu_mlp_drifts():
    """Criterion 2: a deep default-init ReLU MLP triggers IL101."""
    torch.manual_seed(0)
    model = _mlp(20, WIDTH, nn.ReLU)
    report = initlint.check(model, input_shapes=[(8, WIDTH)], seed=0)
    assert "IL101" in report.codes()


def test_kaiming_relu_mlp_is_clean():
    """Criterion 3: a Kaiming-init ReLU MLP with a default-init head has no IL101 and no IL501."""
    torch.manual_seed(0)
    model = _mlp(20, WIDTH, nn.ReLU, head=10)
    for layer in list(model)[:-1]:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    codes = initlint.check(model, input_shapes=[(8, WIDTH)], seed=0).codes()
    assert "IL101" not in codes
    assert "IL501" not in codes


def test_xavier_tanh_gain_five_thirds_gradient_drift():
    """Criterion 4: 50 x (Linear->Tanh), xavier gain 5/3: IL501 fires, IL101 does not,
    and the last tanh's activation std is in [0.5, 0.8]."""
    torch.manual_seed(0)
    gain = torch.nn.init.calculate_gain("tanh")
    assert math.isclose(gain, 5 / 3)
    model = _tanh_stack(gain)
    report = initlint.check(model, input_shapes=[(8, 256)], seed=0)
    codes = report.codes()
    assert "IL501" in codes
    assert "IL101" not in codes
    last_tanh = [name for name, m in model.named_modules() if isinstance(m, nn.Tanh)][-1]
    nodes = [n for n in report.to_dict()["nodes"] if n["module"] == last_tanh]
    assert len(nodes) == 1
    assert 0.5 <= nodes[0]["std"] <= 0.8, nodes[0]


def test_xavier_tanh_gain_1_1_is_clean():
    """Criterion 5: the same tanh stack with gain 1.1 has neither IL101 nor IL501."""
    torch.manual_seed(0)
    model = _tanh_stack(1.1)
    codes = initlint.check(model, input_shapes=[(8, 256)], seed=0).codes()
    assert "IL101" not in codes
    assert "IL501" not in codes


def test_unit_normal_tanh_saturates():
    """Criterion 6: Linear->Tanh with N(0, 1) weights triggers IL201."""
    torch.manual_seed(0)
    model = _mlp(6, WIDTH, nn.Tanh)
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight)
    report = initlint.check(model, input_shapes=[(8, WIDTH)], seed=0)
    assert "IL201" in report.codes()


def test_global_average_pool_shrinks():
    """Criterion 7: default-init convs then AdaptiveAvgPool2d(1) trigger IL301."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )
    report = initlint.check(model, input_shapes=[(8, 3, 32, 32)], seed=0)
    assert "IL301" in report.codes()


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, channels // reduction, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(channels // reduction, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))


class SEBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.act = nn.ReLU()
        self.se = SqueezeExcite(cout)

    def forward(self, x):
        return self.se(self.act(self.conv(x)))


class SENet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(SEBlock(16, 32), SEBlock(32, 32), SEBlock(32, 64))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def _lsuv_se(model: SENet, batch: torch.Tensor, max_iters: int = 10, tol: float = 0.05) -> None:
    """Capped LSUV over the SE convs: bias -= mean, weight /= std of the following activation."""
    for module in model.modules():
        if not isinstance(module, SqueezeExcite):
            continue
        for layer, act in ((module.reduce, module.relu), (module.expand, module.gate)):
            seen: dict[str, torch.Tensor] = {}
            handle = act.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
            with torch.no_grad():
                for _ in range(max_iters):
                    model(batch)
                    out = seen["out"]
                    std = out.std()
                    if not torch.isfinite(std) or std == 0 or abs(std - 1) < tol:
                        break
                    layer.bias -= out.mean()
                    layer.weight /= std
            handle.remove()


def test_squeeze_excitation_gates():
    """Criterion 8: an SE CNN has no IL401 at default init, and exactly one IL401 per SE gate
    after a capped LSUV loop over the SE layers."""
    torch.manual_seed(0)
    model = SENet()
    shape = (8, 3, 32, 32)
    assert "IL401" not in initlint.check(model, input_shapes=[shape], seed=0).codes()

    _lsuv_se(model, torch.randn(*shape))
    report = initlint.check(model, input_shapes=[shape], seed=0)
    gates = [f for f in report.findings if f.code == "IL401"]
    n_se = sum(isinstance(m, SqueezeExcite) for m in model.modules())
    assert len(gates) == n_se, [(f.module, f.data) for f in gates]
    assert len({f.module for f in gates}) == n_se


def test_check_does_not_modify_model():
    """Non-modification: parameters, buffers, requires_grad, .training and .grad are untouched
    by check, for a train-mode model with BatchNorm2d and Dropout."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8, 4),
    )
    model.train()
    model[4].bias.requires_grad_(False)
    before_params = {k: v.detach().clone() for k, v in model.named_parameters()}
    before_buffers = {k: v.clone() for k, v in model.named_buffers()}
    before_req = {k: v.requires_grad for k, v in model.named_parameters()}
    before_training = {k: m.training for k, m in model.named_modules()}
    assert any(k.endswith("num_batches_tracked") for k in before_buffers)

    initlint.check(model, input_shapes=[(8, 3, 32, 32)], seed=0)

    after_params = dict(model.named_parameters())
    after_buffers = dict(model.named_buffers())
    assert after_params.keys() == before_params.keys()
    assert after_buffers.keys() == before_buffers.keys()
    for k, v in after_params.items():
        assert torch.equal(v.detach(), before_params[k]), k
        assert v.requires_grad == before_req[k], k
        assert v.grad is None, k
    for k, v in after_buffers.items():
        assert torch.equal(v, before_buffers[k]), k
    assert {k: m.training for k, m in model.named_modules()} == before_training

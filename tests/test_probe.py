"""The probe: statistics it stores match direct computation, gradients match theory, no side effects."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn

import initlint


def _node(report, name):
    return next(n for n in report.to_dict()["nodes"] if n["name"] == name)


def test_forward_stats_match_a_direct_forward_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 16))
    x = torch.randn(8, 32)
    report = initlint.check(model, x)
    with torch.no_grad():
        hidden = model[1](model[0](x))
    tanh = _node(report, "_1")
    assert tanh["std"] == pytest.approx(hidden.std().item(), rel=1e-5)
    assert tanh["mean"] == pytest.approx(hidden.mean().item(), abs=1e-6)


def test_gradient_std_matches_the_transposed_weights():
    """For y = W x and a N(0, 1) cotangent g, dL/dx = W^T g, whose std is sqrt(mean_i sum_j W_ji^2)."""
    torch.manual_seed(0)
    model = nn.Linear(256, 512, bias=False)
    report = initlint.check(model, input_shapes=[(64, 256)])
    expected = model.weight.pow(2).sum(0).mean().sqrt().item()
    measured = _node(report, "input_1")["grad_std"]
    # 64 x 256 gradient entries: sampling error of the std is ~1 %
    assert measured == pytest.approx(expected, rel=0.05)
    output = _node(report, report.graph.main_path[-1])
    assert output["grad_std"] == pytest.approx(1.0, rel=0.05)  # the N(0, 1) cotangent itself


def test_no_parameter_gradient_is_computed_yet_token_embeddings_get_theirs():
    """The rules read activation gradients only; weight gradients would double the backward's
    cost. An embedding of token ids still gets its gradient, as a source of its own."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))
    differentiated = []
    for name, parameter in model.named_parameters():
        parameter.register_hook(lambda grad, name=name: differentiated.append(name))
    report = initlint.check(model, torch.randint(0, 50, (8, 5)))
    assert differentiated == []
    embedding = _node(report, "_0")
    assert embedding["grad_std"] is not None and embedding["grad_std"] > 0


def test_saturated_fraction_matches_the_gaussian_tail():
    """tanh's slope 1 - tanh(x)^2 is under 0.1 where |x| > atanh(sqrt(0.9)) = 1.818."""
    model = nn.Tanh()
    report = initlint.check(model, torch.randn(64, 4096, generator=torch.Generator().manual_seed(0)))
    threshold = math.atanh(math.sqrt(0.9))
    expected = math.erfc(threshold / math.sqrt(2))  # P(|x| > threshold) for x ~ N(0, 1)
    assert _node(report, "tanh")["saturated_fraction"] == pytest.approx(expected, abs=0.005)


def _snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "grads": [p.grad for p in model.parameters()],
    }


@pytest.mark.parametrize("training", [True, False])
def test_model_is_left_exactly_as_it_was(training):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(8 * 6 * 6, 4),
    )
    model.train(training)
    model[0].weight.requires_grad_(False)
    before = _snapshot(model)
    rng_before = torch.get_rng_state()
    initlint.check(model, input_shapes=[(4, 3, 8, 8)])
    after = _snapshot(model)
    assert before["requires_grad"] == after["requires_grad"]
    assert before["training"] == after["training"]
    assert after["grads"] == [None] * len(after["grads"])
    assert before["state"].keys() == after["state"].keys()
    for key in before["state"]:
        assert torch.equal(before["state"][key], after["state"][key]), key
    assert torch.equal(rng_before, torch.get_rng_state())


def test_batch_norm_uses_batch_statistics_and_dropout_is_off():
    """Eval-mode running stats (mean 0, var 1) would pass 3 + 2z through unchanged; batch stats give std 1."""
    model = nn.Sequential(nn.BatchNorm1d(16), nn.Dropout(0.9)).eval()
    x = 3 + 2 * torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    report = initlint.check(model, x)
    bn, dropout = _node(report, "_0"), _node(report, "_1")
    assert bn["mean"] == pytest.approx(0.0, abs=1e-5)
    assert bn["std"] == pytest.approx(1.0, rel=0.02)
    assert dropout["std"] == bn["std"] and dropout["zero_fraction"] == 0


class _HalfDroppedPath(nn.Module):
    """Stochastic depth written out, as Hugging Face's ``drop_path`` is (no class initlint knows)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        return x.div(0.5) * torch.floor(0.5 + torch.rand((x.shape[0], 1), dtype=x.dtype))


def test_stochastic_depth_written_out_is_off_as_dropout_is():
    """Its operators show what it is, and the probe sees the branch it would drop half the
    time: the same statistics as with the identity in its place (on the old code, the last
    layer's output std was 1.5x that)."""
    torch.manual_seed(0)
    dropped = nn.Sequential(nn.Linear(16, 16), _HalfDroppedPath(), nn.Linear(16, 4))
    kept = nn.Sequential(dropped[0], nn.Identity(), dropped[2])
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    assert _node(initlint.check(dropped, x), "_2")["std"] == _node(initlint.check(kept, x), "_2")["std"]


def test_model_on_another_device_is_copied_not_moved():
    model = nn.Linear(4, 4)
    original = copy.deepcopy(model)
    initlint.check(model, device="cpu")
    assert torch.equal(model.weight, original.weight)


class FeaturesAndTokens(nn.Module):
    """Two inputs (features and token ids) and a dict of a tensor and a list of outputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Linear(8, 16)
        self.tokens = nn.Embedding(50, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> dict[str, object]:
        h = self.features(x) + self.tokens(ids).mean(1)
        return {"prediction": self.head(torch.relu(h)), "aux": [h, h.pow(2)]}


def test_several_inputs_token_ids_and_nested_outputs():
    report = initlint.check(FeaturesAndTokens())
    inputs = {spec.name: spec for spec in report.inputs}
    assert inputs["x"].shape == (8, 8) and inputs["x"].integer_high is None
    assert inputs["ids"].shape == (8, 32) and inputs["ids"].integer_high == 50
    nodes = {n["name"]: n for n in report.to_dict()["nodes"]}
    # every float value gets a gradient, the token branch too (it reaches no float input)
    assert all(n["grad_std"] > 0 for n in nodes.values() if n["dtype"] and n["dtype"].startswith("float"))
    # h feeds both outputs: its gradient is the cotangent through 'add' plus the ones from pow and head
    assert nodes["pow_1"]["grad_std"] == pytest.approx(1.0, rel=0.1)  # an output's own cotangent, N(0, 1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_are_probed_in_their_dtype(dtype):
    report = initlint.check(FeaturesAndTokens().to(dtype))
    nodes = {n["name"]: n for n in report.to_dict()["nodes"]}
    assert nodes["x"]["dtype"] == nodes["head"]["dtype"] == str(dtype).removeprefix("torch.")
    full = {n["name"]: n for n in initlint.check(FeaturesAndTokens()).to_dict()["nodes"]}
    # the same probe in reduced precision: statistics agree to its resolution (8 bits for bf16)
    assert nodes["head"]["std"] == pytest.approx(full["head"]["std"], rel=0.02)


def test_an_embedding_transformer_is_traced_and_reported():
    """Token ids into nn.TransformerEncoder, whose fast path branches on the data: export
    captures it, its layers and all, and the ids are drawn from the embedding's vocabulary."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, norm_first=True)
    model = nn.Sequential(nn.Embedding(200, 32), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                          nn.Linear(32, 200))
    report = initlint.check(model)
    assert report.trace_mode == "export" and report.inputs[0].integer_high == 200
    nodes = {n["name"]: n for n in report.to_dict()["nodes"]}
    assert nodes["_0"]["grad_std"] > 0 and math.isfinite(nodes["_2"]["std"])
    assert "1.layers.1.linear2" in {v.module for v in report.graph.nodes.values()}
    assert "IL001" not in report.codes()


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_a_caller_under_no_grad_or_inference_mode_gets_the_same_report(mode):
    """A benchmark or an eval loop may call check with autograd off; the probe turns it on."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))
    expected = initlint.check(model, input_shapes=[(8, 16)]).to_dict()["nodes"]
    with mode():
        nodes = initlint.check(model, input_shapes=[(8, 16)]).to_dict()["nodes"]
    assert [n["grad_std"] for n in nodes] == [n["grad_std"] for n in expected]
    assert all(n["grad_std"] for n in nodes)

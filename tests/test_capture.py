"""Capture with torch.export where fx cannot trace: size reads, library models, behaviour kinds."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import initlint
from initlint import ops
from initlint.api import CheckOptions, ModelSource
from initlint.export import write_fix
from initlint.fixer import run_fix
from initlint.graph import GATE, SQUEEZE
from initlint.load import load_target
from initlint.model_outputs import output_tensors
from initlint.module_calls import behaviour_kind

POSITIONAL_ENCODING_MODEL = """
import math
import torch
from torch import nn

class RMSNorm(nn.Module):
    # written out, as language-model code does: x * rsqrt(mean(x^2) + eps) * w
    def __init__(self, width):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight

class TanhGELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))

class Net(nn.Module):
    def __init__(self, vocab=50, width=32, depth=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.register_buffer("pe", torch.randn(100, width) * 0.1)
        self.blocks = nn.ModuleList(
            nn.Sequential(RMSNorm(width), nn.Linear(width, width), TanhGELU(), nn.Linear(width, width))
            for _ in range(depth)
        )
        self.norm = RMSNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids):
        x = self.embed(ids) + self.pe[: ids.shape[1]]   # slicing by a size: fx cannot trace it
        for block in self.blocks:
            x = x + block(x)
        return self.head(self.norm(x))

def build():
    torch.manual_seed(0)
    return Net()
"""


@pytest.fixture
def size_slicing_model(model_file):
    return model_file(POSITIONAL_ENCODING_MODEL, "lm.py")


def test_a_model_that_slices_by_a_size_is_captured_as_a_graph(run_cli, size_slicing_model):
    result = run_cli("check", f"{size_slicing_model}:build", "--output-format", "json")
    report = json.loads(result.stdout)["reports"][0]
    assert report["trace"]["mode"] == "export", report["trace"]
    assert "torch.fx could not trace" in report["trace"]["note"]
    nodes = {node["name"]: node for node in report["nodes"]}
    modules = {node["module"] for node in nodes.values()}
    assert {"blocks.0.1", "blocks.2.3", "head", "embed"} <= modules  # module paths, as fx gives them
    assert all(node["std"] is None or math.isfinite(node["std"]) for node in nodes.values())


def test_behaviour_names_a_written_out_norm_and_activation(size_slicing_model):
    import importlib.util

    spec = importlib.util.spec_from_file_location("lm_module", size_slicing_model)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = initlint.check(module.build())
    kinds = {view.module: view.kind for view in report.graph.nodes.values() if view.op == "call_module"}
    assert kinds["blocks.0.0"] == ops.OpKind(ops.NORM, "rms_norm")
    assert kinds["norm"] == ops.OpKind(ops.NORM, "rms_norm")
    assert kinds["blocks.1.2"].family == ops.ACTIVATION
    # the norm's mean of squares is no pool, and the GELU's inner addition no residual add
    assert "IL301" not in report.codes()
    adds = [v for v in report.graph.nodes.values() if v.kind.family == ops.ADD]
    assert len(adds) == 3 + 1, [v.name for v in adds]  # one residual add per block, one for the positions


def test_fx_traced_modules_are_named_by_behaviour_too():
    """A model fx can trace, with a user's RMSNorm: one norm node, as export would give."""

    class RMSNorm(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(width))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), RMSNorm(16), nn.Linear(16, 4))
    report = initlint.check(model, input_shapes=[(8, 6, 16)])
    assert report.trace_mode == "fx"
    (norm,) = [v for v in report.graph.nodes.values() if v.module == "1"]
    assert norm.op == "call_module" and norm.kind == ops.OpKind(ops.NORM, "rms_norm")
    assert "IL301" not in report.codes()


def test_fx_traced_modules_named_by_behaviour_may_read_one_another():
    """A written-out activation straight into a written-out stochastic depth (Hugging Face's
    PoolFormer: GELU, then its drop-path module): the second call's node reads the first's.
    It read the activation's erased last operator ("referenced nonexistent value mul_3")."""

    class TanhGELU(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 0.5 * x * (1.0 + torch.tanh(0.7978845608 * (x + 0.044715 * torch.pow(x, 3.0))))

    class DropPath(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.div(0.9) * torch.floor(0.9 + torch.rand((x.shape[0], 1), dtype=x.dtype))

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), TanhGELU(), DropPath(), nn.Linear(16, 4))
    report = initlint.check(model, input_shapes=[(8, 16)])
    assert report.trace_mode == "fx"
    kinds = {v.module: v.kind.family for v in report.graph.nodes.values() if v.op == "call_module"}
    assert kinds == {"0": ops.WEIGHTED, "1": ops.ACTIVATION, "2": ops.DROPOUT, "3": ops.WEIGHTED}


def test_keyword_arguments_that_forward_takes_and_ignores_are_no_input():
    """``forward(self, pixel_values, **kwargs)``, as transformers 5 writes its models: fx gave
    ``**kwargs`` a placeholder, and the check asked for ``--input **kwargs=SHAPE:DTYPE``."""

    class TakesKeywords(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
            return self.layer(x)

    report = initlint.check(TakesKeywords(), input_shapes=[(8, 16)])
    assert report.trace_mode == "fx" and [spec.name for spec in report.inputs] == ["x"]


def test_behaviour_kind_needs_the_whole_pattern():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    aten = torch.ops.aten
    mean = graph.call_function(aten.mean.dim, (x, [-1], True))
    scaled = graph.call_function(aten.mul.Tensor, (x, mean))
    assert behaviour_kind([mean, scaled], uses_state=False) is None  # a mean without a rescale: no norm
    tanh = graph.call_function(aten.tanh.default, (x,))
    assert behaviour_kind([tanh, scaled], uses_state=True) is None  # weights: no activation
    assert behaviour_kind([tanh], uses_state=False).family == ops.ACTIVATION


class _LibrarySigmoid(nn.Module):
    """A library's own sigmoid class, as timm's: ``x.sigmoid()``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sigmoid()


class _GatedConv(nn.Module):
    """conv -> ReLU -> ``x * sigmoid(expand(relu(reduce(mean of x))))`` -> mean -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.reduce, self.expand = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.gate, self.head = _LibrarySigmoid(), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        x = x * self.gate(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return self.head(x.mean((2, 3)))


def test_a_module_that_applies_one_known_activation_is_that_activation():
    """A class that only applies a sigmoid is a sigmoid, not an activation of no known kind: the
    product it feeds is a gate, and the mean before it a squeeze-excitation's squeeze, no pool
    of the signal (timm's ``Sigmoid`` left regnety_002 with 13 squeezes reported by IL301)."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    sigmoid = graph.call_method("sigmoid", (x,))
    viewed = graph.call_method("view", (sigmoid, -1))
    assert behaviour_kind([sigmoid, viewed], uses_state=False) == ops.OpKind(ops.ACTIVATION, "sigmoid")
    scaled = graph.call_function(torch.mul, (sigmoid, 2.0))
    assert behaviour_kind([sigmoid, scaled], uses_state=False) == ops.OpKind(ops.ACTIVATION, "activation")

    torch.manual_seed(0)
    report = initlint.check(_GatedConv(), input_shapes=[(8, 3, 16, 16)])
    (gate,) = [v for v in report.graph.nodes.values() if v.module == "gate"]
    assert gate.kind == ops.OpKind(ops.ACTIVATION, "sigmoid") and GATE in gate.roles
    assert [v.name for v in report.graph.nodes.values() if SQUEEZE in v.roles] == ["mean"]
    assert all(f.module != "mean" for f in report.findings if f.code == "IL301")


def test_structured_outputs_are_flattened_by_position():
    from collections import namedtuple

    Pair = namedtuple("Pair", "logits extra")
    a, b = torch.zeros(1), torch.ones(1)
    flat = output_tensors({"out": Pair(a, [b, None, 3])})
    assert list(flat) == ["out.logits", "out.extra.0"] and flat["out.extra.0"] is b


def test_data_dependent_control_flow_still_falls_back_to_hooks_with_both_reasons():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    report = initlint.check(Branchy())
    assert report.trace_mode == "hooks"
    assert "torch.fx could not trace" in report.trace_note and "torch.export failed too" in report.trace_note


transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("build", [
    lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=128)),
    lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=64, n_layer=4, n_head=4, vocab_size=128, n_positions=64)),
    lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16, vocab_size=128)),
    lambda: transformers.BertForSequenceClassification(transformers.BertConfig(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, vocab_size=128)),
    lambda: transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, image_size=32,
        patch_size=8)),
    lambda: transformers.OPTForCausalLM(transformers.OPTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128, vocab_size=128,
        word_embed_proj_dim=64)),
    lambda: transformers.BartForConditionalGeneration(transformers.BartConfig(
        d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=128)),
], ids=["llama", "gpt2", "t5", "bert", "vit", "opt", "bart"])
def test_default_initialized_transformers_are_graphs_without_findings(build):
    """Their 0.02-scale residual streams closed by a final norm, T5's position-bucket table
    and log(0), BERT's pooler in the head: the design (DESIGN.md), not faults."""
    torch.manual_seed(0)
    report = initlint.check(build())
    assert report.trace_mode == "export"
    assert report.findings == [], [f"{f.code} {f.module}: {f.message}" for f in report.findings]
    assert [v for v in report.graph.nodes.values() if v.kind.family == ops.NORM]


def test_llama_rmsnorms_are_norms_whatever_their_class():
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=128))
    graph = initlint.check(model).graph
    norms = [v for v in graph.nodes.values() if v.kind.family == ops.NORM]
    assert len(norms) == 2 * 3 + 1  # two per block and the final one
    # the signal runs embedding -> residual adds -> final norm -> head; the rotary cos/sin,
    # made from positions and the input's dtype, are no part of it
    path = [graph.view(name) for name in graph.main_path]
    assert [v.module for v in path[1:2]] == ["model.embed_tokens"] and path[-1].module == "lm_head"
    assert not [v for v in path if v.module and "rotary" in v.module]


def test_fix_writes_an_exported_model_whose_modules_code_cannot_rebuild(run_cli, size_slicing_model, tmp_path):
    """The written-out RMSNorm and GELU classes of the model file cannot be rebuilt by generated
    code: their captured operators are written instead, and the folder imports, loads its
    weights and checks; the folded weights match the renorm-node model."""
    out = tmp_path / "fixed"
    result = run_cli("fix", f"{size_slicing_model}:build", "-o", str(out), "--fold")
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "renorm.json").read_text())
    assert plan["fold_error"] < 1e-4 and plan["constants"]
    # imports, builds, loads its weights strictly, and reads as the original: the captured
    # operators stay in a module of their own, so the re-check recognises the norm again
    assert run_cli("check", str(out)).exit_code == 0
    assert "rsqrt" in (out / "model.py").read_text()


TINY_GPT2 = """
import torch
import transformers

def build():
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=32))
"""


def test_a_fixed_exported_model_runs_at_any_batch_size_and_length(run_cli, model_file, tmp_path):
    """Exported at symbolic sizes, the generated code reads its views' sizes from the input:
    captured at the planned 64x32 tokens, it once raised "shape '[64, 32, 96]' is invalid" on
    any other batch. The written model computes what the fixed graph computes."""
    path = model_file(TINY_GPT2, "gpt.py")
    out = tmp_path / "fixed"
    assert run_cli("fix", f"{path}:build", "-o", str(out)).exit_code == 0
    written = load_target(str(out)).model.eval()
    fixed = initlint.fix(load_target(f"{path}:build").model).eval()
    for batch, length in [(1, 5), (3, 20)]:
        ids = torch.randint(0, 100, (batch, length), generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            logits = written(input_ids=ids)["logits"]
            assert logits.shape == (batch, length, 100)
            torch.testing.assert_close(logits, fixed(input_ids=ids)["logits"])


class _PerSample(nn.Module):
    """A forward that loops over its batch (fx cannot): export at symbolic sizes keeps the
    batch size as a number (``Dim.AUTO`` specializes it)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.tanh(self.layer(x[i])) for i in range(x.shape[0])])


def test_fix_says_when_the_fixed_model_runs_at_the_planned_batch_only():
    result = run_fix(_PerSample(), (), CheckOptions(input_shapes=[(64, 8)]), ModelSource())
    note = result.analysed.traced.note
    assert result.analysed.traced.mode == "export" and "runs at those only: x's batch at 64" in note, note


def test_a_fixed_exported_model_is_checked_at_the_inputs_it_was_planned_with(run_cli, model_file, tmp_path):
    """The constants were fitted at the planned shapes, and a model export could capture only
    at fixed sizes has them in its code: ``check DIR`` takes the recorded inputs instead of
    inferring others."""
    path = model_file(TINY_GPT2, "gpt.py")
    out = tmp_path / "fixed"
    assert run_cli("fix", f"{path}:build", "-o", str(out)).exit_code == 0
    plan = json.loads((out / "renorm.json").read_text())
    assert plan["capture"] == "export"
    result = run_cli("check", str(out), "--output-format", "json")
    assert result.exit_code in (0, 1), result.output
    (used,) = json.loads(result.stdout)["reports"][0]["inputs"]
    assert used["shape"] == plan["inputs"][0]["shape"]


class _LearnedPositions(nn.Embedding):
    """An ``nn.Embedding`` with a forward of its own, as OPT's and BART's: it takes the token
    ids and embeds their positions, so ``module(x)`` is not the call the model made."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.arange(ids.shape[1]).expand_as(ids) + 2)


class _PositionalModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tokens, self.positions = nn.Embedding(50, 16), _LearnedPositions(40, 16)
        self.head = nn.Linear(16, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > 32:  # fx cannot branch on a traced size; export can
            raise ValueError("sequence too long")
        return self.head(self.tokens(ids) + self.positions(ids))


def test_a_standard_layer_with_a_forward_of_its_own_stays_its_operators():
    torch.manual_seed(0)
    report = initlint.check(_PositionalModel())
    assert report.trace_mode == "export"
    positions = [v for v in report.graph.nodes.values() if v.module == "positions"]
    assert positions and all(v.op == "call_function" for v in positions)  # not call_module(positions)(ids)
    assert any(v.kind.name == "embedding" for v in positions)


class _Recurrence(nn.Module):
    """Fills a zero tensor step by step, as RWKV's CPU recurrence does: writes through views
    (a select, a select then a slice, a transpose, a permute, a view) and an in-place add on a
    computed value."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.inner = nn.Linear(width, width)
        with torch.no_grad():
            self.inner.weight.copy_(torch.eye(width))
            self.inner.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inner(x)
        out = torch.zeros_like(h)
        for t in range(h.shape[1]):  # a loop over a size: fx cannot trace it
            out[:, t] = 2 * h[:, t]
        out[:, 0, :4] = 0.0  # through a select then a slice
        out.transpose(1, 2)[:, :, -1] = 3 * h[:, -1]  # through a transpose
        out.permute(2, 0, 1)[1] = -h[:, :, 1]  # through a permute
        out.view(-1)[:16] = 5.0  # through a view of the whole
        doubled = out.clone()
        doubled.add_(out)  # in place on a computed value
        return doubled


def test_writes_into_views_reach_the_values_read_after_them():
    """Under export, ``out[:, t] = y`` is a view then an in-place copy; the probe must see the
    filled tensor, not the zeros it started as. Expected stds from an eager run on the probe's
    own draw: the probe's inputs are N(0, 1) and the layer is the identity."""
    torch.manual_seed(0)
    model = _Recurrence()
    report = initlint.check(model, input_shapes=[(64, 5, 8)])
    assert report.trace_mode == "export", report.trace_note
    x = torch.randn(64, 5, 8)
    with torch.no_grad():
        expected = model(x)
    (output,) = [v for v in report.graph.nodes.values() if "output" in v.roles] or \
        [report.graph.nodes[v.inputs[0]] for v in report.graph.nodes.values() if v.op == "output"]
    # 64*5*8 = 2560 values: the std's standard error is ~1.4 %; 5 % is over 3 of them
    assert output.stats.std == pytest.approx(expected.std().item(), rel=0.05)
    # the zeroed slice and the written last step show as exactly zero / nonzero shares
    assert output.stats.zero_fraction == pytest.approx((expected == 0).float().mean().item(), abs=0.01)


def test_writes_into_views_rebuilt_for_fix_run_at_any_batch_size():
    """``fix`` captures at symbolic sizes: a write rebuilt as a reshape to its parent's shape,
    or a copy broadcast to its destination's, reads that shape at run time, not the probe's
    batch of 64 (one sample's rows do not depend on the others')."""
    torch.manual_seed(0)
    fixed = initlint.fix(_Recurrence(), input_shapes=[(64, 5, 8)])
    x = torch.randn(64, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(fixed(x[:3]), fixed(x)[:3])


def test_a_write_through_a_view_it_cannot_invert_is_said_plainly():
    from initlint.inplace import UnfollowableWrite, functionalize_writes

    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    aten = torch.ops.aten
    base = graph.call_function(aten.clone.default, (x,))
    base.meta["val"] = torch.zeros(4, 1)
    wide = graph.call_function(aten.expand.default, (base, [4, 3]))
    wide.meta["val"] = torch.zeros(4, 3)
    graph.call_function(aten.fill_.Scalar, (wide, 1.0))
    graph.output(base)
    with pytest.raises(UnfollowableWrite, match="aten.expand"):
        functionalize_writes(graph)


def test_a_write_into_one_piece_of_a_split_is_refused_rather_than_lost():
    class WritesIntoAPiece(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros_like(x)
            for t in range(x.shape[1]):  # fx cannot trace it
                first, _ = out.split(x.shape[-1] // 2, dim=-1)
                first[:, t] = x[:, t, : x.shape[-1] // 2]
            return out

    report = initlint.check(WritesIntoAPiece(), input_shapes=[(8, 3, 4)])
    assert report.trace_mode == "hooks"
    assert "aten.split" in report.trace_note, report.trace_note


def test_the_captured_graph_computes_what_the_model_computes_after_its_writes():
    """Element by element, on a fresh input: every write reaches the output."""
    from initlint.capture import capture_with_export
    from initlint.inputs import InputSpec, ProbeInputs

    torch.manual_seed(0)
    model = _Recurrence()
    x = torch.randn(4, 5, 8)
    graph_module, _ = capture_with_export(model, ProbeInputs([InputSpec("x", tuple(x.shape))], [x]))
    with torch.no_grad():
        torch.testing.assert_close(graph_module(x), model(x))


class _TimestepModel(nn.Module):
    """A diffusion model's two positional inputs: an image and an integer timestep per sample,
    which a sinusoid turns into floats (no embedding table that would tell its dtype)."""

    def __init__(self) -> None:
        super().__init__()
        self.time, self.conv = nn.Linear(4, 8), nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        frequencies = torch.arange(4, device=sample.device) + 1.0
        time = torch.tanh(self.time(torch.sin(timestep[:, None] * frequencies)))
        return self.conv(sample) + time[:, :, None, None]


def test_a_fixed_model_is_checked_with_the_dtypes_it_was_planned_with(run_cli, tmp_path):
    """The plan records the timestep as int64; ``check DIR`` drew it as floats (positional
    inputs were given by shape alone), and a diffusers UNet2DModel, clean when checked with
    its integer timestep, had IL101 after fix."""
    torch.manual_seed(0)
    result = run_fix(_TimestepModel(), (), CheckOptions(inputs={"timestep": "8:int64"}, input_shapes=[(8, 3, 8, 8)]),
                     ModelSource())
    write_fix(tmp_path / "fixed", result, "test", force=False)
    checked = run_cli("check", str(tmp_path / "fixed"), "--output-format", "json")
    used = {spec["name"]: spec["dtype"] for spec in json.loads(checked.stdout)["reports"][0]["inputs"]}
    assert used == {"sample": "float", "timestep": "int64"}, used


class _RowEncoder(nn.Module):
    """A post-LN ``nn.TransformerEncoder`` over 8 tokens of width 32 (ReLU feed-forward)."""

    def __init__(self, numpy_leaf: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = _NumpyRoundTrip(8) if numpy_leaf else nn.Linear(8, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(1))


class _NumpyRoundTrip(nn.Module):
    """A Linear whose input goes through numpy: fx traces it as a declared leaf, export cannot."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.from_numpy(x.detach().numpy()))


def test_a_torch_transformer_encoder_is_traced_into_and_fixed_inside():
    """fx keeps every torch.nn module whole, so a TransformerEncoder was one opaque node: its
    Linear layers unchecked, its ReLUs unfixed. Traced into (by export), its feed-forward ReLUs
    are planned, and the fold is exact."""
    model, shapes = _RowEncoder(), [(16, 8, 8)]
    report = initlint.check(model, input_shapes=shapes)
    modules = {v.module for v in report.graph.nodes.values()}
    assert report.trace_mode == "export" and {"encoder.layers.1.linear1", "encoder.layers.1.linear2"} <= modules
    result = run_fix(model, (), CheckOptions(input_shapes=shapes), ModelSource(), fold=True)
    shaped = {r.module for r in result.plan if r.site == "activation"}
    assert any(path.startswith("encoder.layers.1") for path in shaped), shaped
    assert result.fold_error < 1e-4


def test_containers_that_export_cannot_capture_are_traced_whole_and_said_so():
    """Where export fails too (here on a declared leaf that goes through numpy), fx traces the
    model with the containers whole, as before, and the note says what goes unchecked."""
    report = initlint.check(_RowEncoder(numpy_leaf=True), input_shapes=[(16, 8, 8)], leaf_modules=[_NumpyRoundTrip])
    assert report.trace_mode == "fx" and "nn.TransformerEncoder" in report.trace_note
    assert "encoder" in {v.module for v in report.graph.nodes.values()}


def test_a_layer_that_only_the_output_reads_is_one_call_too():
    """The head, read by the graph's output alone, was left as ATen operators (its weight and
    bias as loose attributes), unlike every other Linear of an exported model."""
    from initlint.capture import capture_with_export
    from initlint.inputs import InputSpec, ProbeInputs

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    graph_module, _ = capture_with_export(model, ProbeInputs([InputSpec("x", (8, 4))], [torch.randn(8, 4)]), [], False)
    assert [(n.op, n.target) for n in graph_module.graph.nodes if n.op != "placeholder"] == [
        ("call_module", "0"), ("call_module", "1"), ("call_module", "2"), ("output", "output")]

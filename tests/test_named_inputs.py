"""Inputs by name and dtype (--input, config ``inputs``, keyword tensors) and the inference
that runs before any graph exists: from forward's signature, registered layers and config."""

from __future__ import annotations

import inspect
import json

import pytest
import torch
import torch.nn as nn

import initlint
from initlint.api import CheckOptions, ModelSource, analyse
from initlint.errors import InitlintError
from initlint.forward_inputs import specs_before_capture
from initlint.inputs import DEFAULT_BATCH, DEFAULT_TOKENS, draw, parse_input_option


@pytest.mark.parametrize("text, shape, dtype", [
    ("input_ids=8,32:int64", (8, 32), torch.int64),
    ("mask = 2,5:bool", (2, 5), torch.bool),
    ("x=4,3:bfloat16", (4, 3), torch.bfloat16),
    ("x=4,3", (4, 3), None),  # the model's own float dtype
])
def test_parse_input_option(text, shape, dtype):
    spec = parse_input_option(text)
    assert (spec.shape, spec.dtype, spec.keyword) == (shape, dtype, True)


@pytest.mark.parametrize("text, message", [
    ("input_ids", "has no '='"), ("ids=8,32:int8", "'int8' is not one of"), ("ids=8,a", "shape '8,a'"),
    ("2ids=8", "not a Python identifier"),
])
def test_parse_input_option_rejects_nonsense(text, message):
    with pytest.raises(InitlintError, match=message) as error:
        parse_input_option(text)
    assert "--input NAME=SHAPE:DTYPE" in str(error.value)


class Config:
    """A Hugging Face-style ``model.config``: attributes, nothing else."""

    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)


class KeywordLM(nn.Module):
    """forward(input_ids=None, attention_mask=None), as Hugging Face models take inputs."""

    def __init__(self, vocab: int = 37) -> None:
        super().__init__()
        self.config = Config(max_position_embeddings=12)
        self.embed = nn.Embedding(vocab, 8)
        self.head = nn.Linear(8, vocab)

    def forward(self, input_ids=None, attention_mask=None, labels=None):
        h = self.embed(input_ids)
        if attention_mask is not None:
            h = h * attention_mask[..., None].to(h.dtype)
        return {"logits": self.head(h), "loss": None}


def test_first_parameter_is_the_main_input_though_it_defaults_to_none():
    (spec,) = specs_before_capture(KeywordLM(), None)
    assert (spec.name, spec.shape, spec.integer_high, spec.keyword) == ("input_ids", (DEFAULT_BATCH, 12), 37, True)


def test_input_shape_names_the_main_keyword_input():
    (spec,) = specs_before_capture(KeywordLM(), [(4, 6)])
    assert (spec.name, spec.shape, spec.integer_high) == ("input_ids", (4, 6), 37)


def test_drawn_ids_stay_in_the_vocabulary_and_masks_are_ones():
    specs = specs_before_capture(KeywordLM(vocab=5), None, [parse_input_option("attention_mask=8,12:int64")])
    inputs = draw(specs, 0, torch.device("cpu"), torch.float32)
    ids, mask = inputs.kwargs["input_ids"], inputs.kwargs["attention_mask"]
    assert inputs.args == () and ids.dtype == torch.int64 and 0 <= ids.min() and ids.max() < 5
    assert len(ids.unique()) == 5  # 96 uniform draws from 5 ids miss one with probability < 5 * 0.8**96
    assert torch.equal(mask, torch.ones(8, 12, dtype=torch.int64))


class Seq2Seq(KeywordLM):
    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None):
        return self.head(self.embed(input_ids).mean(1, keepdim=True) + self.embed(decoder_input_ids))


def test_encoder_decoder_gets_decoder_ids_of_the_same_batch():
    specs = specs_before_capture(Seq2Seq(), [(3, 7)])
    assert [(s.name, s.shape, s.integer_high) for s in specs] == [
        ("input_ids", (3, 7), 37), ("decoder_input_ids", (3, 7), 37)]


class NeedsMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 4)

    def forward(self, input_ids, attention_mask, timestep):
        return self.embed(input_ids) * attention_mask[..., None] * timestep


def test_required_inputs_inferred_or_named_in_the_error():
    with pytest.raises(InitlintError, match=r"'timestep'.*--input timestep=SHAPE:DTYPE"):
        specs_before_capture(NeedsMask(), None)
    specs = specs_before_capture(NeedsMask(), None, [parse_input_option("timestep=8,1,1:float32")])
    assert [(s.name, s.shape, s.fill, s.keyword) for s in specs] == [
        ("input_ids", (8, DEFAULT_TOKENS), None, False), ("attention_mask", (8, DEFAULT_TOKENS), 1, False),
        ("timestep", (8, 1, 1), None, False)]


def test_unknown_input_name_lists_the_parameters():
    with pytest.raises(InitlintError, match=r"'pixels' is not a parameter.*input_ids, attention_mask, labels"):
        specs_before_capture(KeywordLM(), None, [parse_input_option("pixels=8,3,4,4")])


class Vision(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = Config(num_channels=2, image_size=[12, 20])
        self.conv = nn.Conv2d(2, 4, 4, stride=4)

    def forward(self, pixel_values=None):
        return self.conv(pixel_values).flatten(1)


def test_pixel_values_from_config():
    (spec,) = specs_before_capture(Vision(), None)
    assert spec.shape == (DEFAULT_BATCH, 2, 12, 20) and spec.dtype is None


class TokensOnly(KeywordLM):
    def forward(self, input_ids=None, labels=None):
        return {"logits": self.head(self.embed(input_ids)), "loss": None}


class Denoiser(nn.Module):
    """A diffusers-style UNet: ``sample`` sized by ``config.sample_size``; ``timestep`` untold."""

    def __init__(self) -> None:
        super().__init__()
        self.config = Config(sample_size=6)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, sample, timestep):
        return self.conv(sample) * timestep


def test_diffusers_sample_from_config_and_timestep_by_name():
    with pytest.raises(InitlintError, match="--input timestep="):
        specs_before_capture(Denoiser(), None)
    sample, timestep = specs_before_capture(Denoiser(), None, [parse_input_option("timestep=8,1,1,1:int64")])
    assert sample.shape == (DEFAULT_BATCH, 3, 6, 6) and timestep.shape == (8, 1, 1, 1)
    assert timestep.integer_high is None and timestep.dtype == torch.int64  # no vocabulary: drawn as zeros


def test_api_keyword_tensors_are_inputs():
    ids = torch.tensor([[1, 2, 3], [4, 4, 0]])
    report = initlint.check(TokensOnly(), input_ids=ids, seed=3)
    (spec,) = report.inputs
    assert (spec.name, spec.shape, spec.keyword) == ("input_ids", (2, 3), True)
    placeholder = next(n for n in report.to_dict()["nodes"] if n["op"] == "placeholder")
    assert placeholder["name"] == "input_ids"
    with pytest.raises(InitlintError, match="unexpected keyword argument 'sede'"):
        initlint.check(TokensOnly(), input_ids=ids, sede=3)


def test_keyword_input_reaches_an_fx_traced_model():
    class Optional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 6)

        def forward(self, x=None):
            return self.fc(x)

    report = initlint.check(Optional(), inputs={"x": "9,6"})
    assert report.trace_mode == "fx" and report.inputs[0].shape == (9, 6)
    placeholder = next(n for n in report.to_dict()["nodes"] if n["op"] == "placeholder")
    assert placeholder["shape"] == [9, 6] and placeholder["std"] == pytest.approx(1.0, abs=0.3)


class FunctionalEmbedding(nn.Module):
    """Ids into a table it reads by function, as ``F.embedding`` in user code or as
    ``aten.embedding`` (weight first) in the code ``fix`` writes for a model that torch.export
    captured: no registered Embedding tells the vocabulary."""

    def __init__(self, aten: bool) -> None:
        super().__init__()
        self.aten = aten
        self.table = nn.Parameter(torch.randn(7, 4))
        self.head = nn.Linear(4, 2)

    def forward(self, ids=None):
        rows = torch.ops.aten.embedding.default(self.table, ids) if self.aten else \
            nn.functional.embedding(ids, self.table)
        return self.head(rows.mean(1))


@pytest.mark.parametrize("aten", [False, True], ids=["F.embedding", "aten.embedding"])
def test_ids_read_by_a_functional_embedding_are_drawn_in_its_vocabulary(aten):
    """Before, ids of no known vocabulary were drawn as zeros: every sample alike, so the
    probe saw no input-dependent signal at all (a fixed BART, whose written code embeds by
    aten.embedding, failed its `check DIR` with IL102 at std 1e-7 across samples)."""
    analysed = analyse(FunctionalEmbedding(aten), (), CheckOptions(inputs={"ids": "8,12:int64"}), ModelSource())
    (ids,) = analysed.inputs.tensors
    assert analysed.traced.mode == "fx" and analysed.inputs.specs[0].integer_high == 7
    assert 0 <= ids.min() and ids.max() < 7 and len(ids.unique()) > 1  # all alike: probability 7 ** -95


MODEL = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(23, 8)

    def forward(self, input_ids=None, attention_mask=None):
        return self.embed(input_ids) * attention_mask[..., None]

def build():
    return Net()
"""


def test_cli_and_config_take_named_inputs(run_cli, model_file, tmp_path, monkeypatch):
    path = model_file(MODEL)
    result = run_cli("check", f"{path}:build", "--input", "input_ids=4,6:int64",
                     "--input", "attention_mask=4,6:bool", "--output-format", "json")
    assert result.exit_code in (0, 1), result.stderr
    inputs = json.loads(result.stdout)["reports"][0]["inputs"]
    assert [(i["name"], i["shape"], i["dtype"], i.get("high"), i.get("fill")) for i in inputs] == [
        ("input_ids", [8, 6], "int64", 23, None), ("attention_mask", [8, 6], "bool", None, 1)]  # batch 4 -> 8
    (tmp_path / "pyproject.toml").write_text(
        '[tool.initlint]\ntargets = [{target = "model.py:build", inputs = '
        '{input_ids = "2,3:int64", attention_mask = "2,3:int64"}}]\n')
    monkeypatch.chdir(tmp_path)
    result = run_cli("check", "--output-format", "json")
    assert result.exit_code in (0, 1), result.stderr
    shapes = [i["shape"] for i in json.loads(result.stdout)["reports"][0]["inputs"]]
    assert shapes == [[8, 3], [8, 3]]  # each given batch of 2 raised to MIN_BATCH


def test_cli_error_for_bad_input_exits_2(run_cli, model_file):
    path = model_file(MODEL)
    result = run_cli("check", f"{path}:build", "--input", "input_ids=4,6:int32")
    assert result.exit_code == 2 and "'int32' is not one of" in result.stderr
    assert "Traceback" not in result.stderr


def test_fix_takes_keyword_inputs():
    class Optional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act = nn.Linear(6, 6), nn.Tanh()

        def forward(self, x=None):
            return self.act(self.fc(x))

    fixed = initlint.fix(Optional(), inputs={"x": "16,6"}, fold=True)
    assert isinstance(fixed, Optional)


class OptionalMask(nn.Module):
    """Inputs that default to None and branch on it, as much model code does: under fx a
    parameter is a symbol, never None, so the branch that uses it was traced and the probe,
    which leaves it None, failed (``TypeError`` in ``masked_fill``)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.head = nn.Linear(6, 6), nn.Linear(6, 2)

    def forward(self, x, mask=None, labels=None):
        h = torch.tanh(self.fc(x))
        if mask is not None:
            h = h.masked_fill(~mask, 0.0)
        logits = self.head(h)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"logits": logits, "loss": loss}


def test_inputs_left_at_none_are_traced_as_none_and_given_ones_as_inputs():
    left = initlint.check(OptionalMask(), input_shapes=[(8, 6)])
    assert left.trace_mode == "fx" and [s.name for s in left.inputs] == ["x"]
    assert not any(n["op"] == "call_function" and "masked_fill" in n["name"] for n in left.to_dict()["nodes"])
    given = initlint.check(OptionalMask(), input_shapes=[(8, 6)], inputs={"mask": "8,6:bool"})
    assert given.trace_mode == "fx" and [s.name for s in given.inputs] == ["x", "mask"]
    assert any("masked_fill" in n["name"] for n in given.to_dict()["nodes"])
    mask = torch.ones(8, 6, dtype=torch.bool)
    positional = initlint.check(OptionalMask(), torch.randn(8, 6), mask)  # mask given by position
    assert [s.shape for s in positional.inputs] == [(8, 6), (8, 6)]
    fixed = initlint.fix(OptionalMask(), input_shapes=[(8, 6)])
    assert fixed(torch.randn(4, 6))["logits"].shape == (4, 2)


class Flagged(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.head = nn.Linear(6, 6), nn.Linear(6, 2)

    def forward(self, x, return_features: bool = False, scale=2.0):
        h = torch.sigmoid(self.fc(x)) * scale
        return h if return_features else self.head(h)


def test_flags_left_at_their_default_are_traced_at_it():
    """``if return_features:`` on a symbol stopped fx ("symbolically traced variables cannot be
    used as inputs to control flow"), so export captured the model; traced at its default, fx
    takes it, and the written code has no input for it, nor fx's guard on its value."""
    report = initlint.check(Flagged(), input_shapes=[(8, 6)])
    assert report.trace_mode == "fx" and [s.name for s in report.inputs] == ["x"]
    fixed = initlint.fix(Flagged(), input_shapes=[(8, 6)])
    assert "specialized" not in fixed.code and list(inspect.signature(fixed.forward).parameters) == ["x"]
    assert fixed(torch.randn(4, 6)).shape == (4, 2)


class MappingInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 4), nn.Linear(3, 4)

    def forward(self, batch):
        return self.a(batch["image"]) + self.b(batch["meta"])


def test_a_mapping_input_is_refused_with_how_to_pass_its_tensors():
    """Before, the probe failed inside the model: "TypeError: new(): invalid data type 'str'"."""
    with pytest.raises(InitlintError, match=r"reads its input 'batch' as a mapping \(batch\['image'\]\).*"
                                            r"forward\(self, image, meta\)"):
        initlint.check(MappingInput(), input_shapes=[(8, 8)])


def test_a_batch_of_one_is_checked_on_several_samples(run_cli):
    """At --input-shape 1,3,32,32 the bundled SE-ResNet checked clean: in one sample nothing
    varies across samples, so its three pinned gates (IL401) went unseen. The batch is raised
    to 8, with a note; example tensors stay as given."""
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "se_resnet_lsuv.py"
    result = run_cli("check", f"{example}:build", "--input-shape", "1,3,32,32", "--output-format", "json")
    (report,) = json.loads(result.stdout)["reports"]
    assert result.exit_code == 1 and report["inputs"][0]["shape"] == [8, 3, 32, 32]
    assert [f["code"] for f in report["findings"]].count("IL401") == 3
    assert "probed on a batch of 8 where 1 was given" in report["trace"]["note"]
    given = initlint.check(nn.Linear(8, 8), torch.randn(3, 8))
    assert given.inputs[0].shape == (3, 8)

"""Hugging Face models as people write them: a ``build()`` returning the bare model, checked with
no flags. Tiny configs, nothing downloaded. Capture may fall back to hooks; these tests are about
the inputs the probe infers (listed in the JSON report) and about the outputs it unwraps."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

BUILDS = {
    "bert": "BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, "
            "intermediate_size=37, vocab_size=99))",
    "gpt2": "GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=99, n_positions=20, "
            "bos_token_id=0, eos_token_id=0))",
    "t5": "T5ForConditionalGeneration(T5Config(d_model=32, d_ff=37, num_layers=2, num_heads=2, d_kv=8, "
          "vocab_size=99, decoder_start_token_id=0))",
    "vit": "ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, "
           "intermediate_size=37, image_size=24, patch_size=8, num_channels=3, num_labels=3))",
    "wav2vec2": "Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, "
                "intermediate_size=37, conv_dim=(16, 16, 16), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), "
                "num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2))",
}


def _check(run_cli, model_file, name: str) -> dict:
    path = model_file(
        "import torch\nfrom transformers import *\n\n"
        f"def build():\n    torch.manual_seed(0)\n    return {BUILDS[name]}\n", name=f"{name}_model.py")
    result = run_cli("check", f"{path}:build", "--output-format", "json")
    assert result.exit_code in (0, 1), result.stderr
    return json.loads(result.stdout)["reports"][0]


def _inputs(report: dict) -> dict[str, dict]:
    return {spec["name"]: spec for spec in report["inputs"]}


def test_bert_gets_token_ids_within_its_vocabulary(run_cli, model_file):
    inputs = _inputs(_check(run_cli, model_file, "bert"))
    assert list(inputs) == ["input_ids"]  # attention_mask is optional: BERT makes its own
    ids = inputs["input_ids"]
    assert (ids["shape"], ids["dtype"], ids["high"], ids["keyword"]) == ([8, 32], "int64", 99, True)


def test_gpt2_sequence_fits_its_position_table(run_cli, model_file):
    report = _check(run_cli, model_file, "gpt2")
    ids = _inputs(report)["input_ids"]
    assert ids["shape"] == [8, 20] and ids["high"] == 99  # n_positions 20 < the default 32 tokens
    logits = [n for n in report["nodes"] if n["module"] == "lm_head"]
    assert logits and logits[0]["grad_std"] == pytest.approx(1.0, rel=0.1)  # backward starts at the logits


def test_t5_gets_encoder_and_decoder_ids(run_cli, model_file):
    inputs = _inputs(_check(run_cli, model_file, "t5"))
    assert set(inputs) == {"input_ids", "decoder_input_ids"}
    assert all(s["dtype"] == "int64" and s["high"] == 99 and s["shape"] == [8, 32] for s in inputs.values())


def test_vit_pixels_from_its_config(run_cli, model_file):
    pixels = _inputs(_check(run_cli, model_file, "vit"))["pixel_values"]
    assert pixels["shape"] == [8, 3, 24, 24] and pixels["dtype"] == "float"
    assert "config.image_size" in pixels["inferred_from"]


def test_wav2vec2_gets_enough_samples_for_its_feature_encoder(run_cli, model_file):
    report = _check(run_cli, model_file, "wav2vec2")
    audio = _inputs(report)["input_values"]
    batch, length = audio["shape"]
    # an independent count: run the feature encoder's convolutions on that many samples
    convs = [torch.nn.Conv1d(1, 1, 10, 5), torch.nn.Conv1d(1, 1, 3, 2), torch.nn.Conv1d(1, 1, 3, 2)]
    frames = torch.nn.Sequential(*convs)(torch.zeros(1, 1, length)).shape[-1]
    assert batch == 8 and frames >= 64
    assert report["probe_note"] is None  # a gradient was taken: the model set requires_grad itself


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_default_init_attention_is_measured_and_not_saturated(run_cli, model_file, name):
    """Their N(0, 0.02^2) projections give logits of std ~0.01: entropy ln n - s^2 / 2, within
    1e-4 of uniform, far from IL203's bound."""
    report = _check(run_cli, model_file, name)
    measured = [n["softmax"] for n in report["nodes"] if n["softmax"]]
    assert len(measured) == 2  # one attention per layer
    assert all(s["entropy_ratio"] > 0.99 and s["logit_std"] < 0.1 for s in measured), measured
    assert "IL203" not in {f["code"] for f in report["findings"]}

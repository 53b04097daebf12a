"""Model definitions people actually have, through the CLI with no wrapper code.

Each family below is a factory that returns the bare model, built from a config (random init,
nothing downloaded; the library's default sizes where a CPU run allows them): Hugging Face transformers, torchvision detectors, segmenters, optical
flow and video models, and a diffusers UNet. Each is checked as a user would check it,

    initlint check benchmarks/real_models.py:FAMILY --output-format json --timings [--input ...]

in a child process, and a plain training step on the same batch (forward, then backward from
every floating-point output, in the mode the check used) is timed in this process. It prints
one JSON line per model: capture mode, nodes, findings, the check's seconds (its own report,
imports aside), the training step's seconds (median of 3) and their ratio; a markdown table
goes to stderr.

    python benchmarks/real_models.py            # every family
    python benchmarks/real_models.py --quick    # a few (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve()
_TOKENS = ["--input", "input_ids=8,128:int64"]

FLAGS = {
    # needed: a diffusers UNet's timestep is an integer that no layer's shape tells
    "unet2d": ["--input", "timestep=8:int64"],
    # sizes in use rather than the inferred ones (32 tokens, 32x32 images), so that the
    # training step the check is compared with is a real one
    **{family: _TOKENS for family in ("bert", "bert_classifier", "gpt2", "llama")},
    "t5": [*_TOKENS, "--input", "decoder_input_ids=8,128:int64"],
    "wav2vec2": ["--input", "input_values=8,16000"],
    "deeplabv3": ["--input-shape", "8,3,224,224"],
    "raft_small": ["--input-shape", "4,3,128,128", "--input-shape", "4,3,128,128"],
    "r3d_18": ["--input-shape", "4,3,16,112,112"],
}
"""Flags per family: what a family needs, and the input sizes it is used at."""
QUICK = ("tiny_gpt2", "unet2d")
"""What --quick runs: seconds, for the test suite."""


def _transformers():
    import transformers

    return transformers


def bert():
    """BERT-base (110M), as BertConfig() defaults."""
    t = _transformers()
    return t.BertModel(t.BertConfig())


def bert_classifier():
    t = _transformers()
    return t.BertForSequenceClassification(t.BertConfig())


def gpt2():
    """GPT-2 small (124M), as GPT2Config() defaults."""
    t = _transformers()
    return t.GPT2LMHeadModel(t.GPT2Config())


def tiny_gpt2():
    """A 2-layer GPT-2 of width 64, for --quick."""
    t = _transformers()
    return t.GPT2LMHeadModel(t.GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=1000, n_positions=64))


def llama():
    """A 12-layer Llama of width 768 (SmolLM-135M-like; Llama-7B does not fit a CI machine)."""
    t = _transformers()
    return t.LlamaForCausalLM(t.LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                                            num_attention_heads=12, num_key_value_heads=4, vocab_size=32000))


def t5():
    """T5-small (60M), as T5Config() defaults."""
    t = _transformers()
    return t.T5ForConditionalGeneration(t.T5Config())


def vit():
    """ViT-base/16 at 224 (86M), as ViTConfig() defaults."""
    t = _transformers()
    return t.ViTForImageClassification(t.ViTConfig())


def whisper():
    """Whisper's default config (d_model 256, 2 + 2 layers) on 30 s of 80 mel bins."""
    t = _transformers()
    return t.WhisperModel(t.WhisperConfig())


def wav2vec2():
    """wav2vec 2.0 base (95M), as Wav2Vec2Config() defaults."""
    t = _transformers()
    return t.Wav2Vec2Model(t.Wav2Vec2Config())


def mamba():
    """A 4-layer Mamba of width 256: without its CUDA kernels Mamba scans in a Python loop, one
    step per token, so the graph grows with the sequence."""
    t = _transformers()
    return t.MambaForCausalLM(t.MambaConfig(hidden_size=256, num_hidden_layers=4, vocab_size=8000, state_size=16))


def rwkv():
    """A 4-layer RWKV of width 256 (its CPU path also runs one step per token)."""
    t = _transformers()
    return t.RwkvForCausalLM(t.RwkvConfig(hidden_size=256, num_hidden_layers=4, vocab_size=8000,
                                          attention_hidden_size=256, intermediate_size=1024, context_length=256))


def fasterrcnn():
    import torchvision

    return torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None)


def deeplabv3():
    import torchvision

    return torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None)


def raft_small():
    import torchvision

    return torchvision.models.optical_flow.raft_small(weights=None)


def r3d_18():
    import torchvision

    return torchvision.models.video.r3d_18(weights=None)


def unet2d():
    import diffusers

    return diffusers.UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8)


FAMILIES = ("bert", "bert_classifier", "gpt2", "llama", "t5", "vit", "whisper", "wav2vec2", "mamba", "rwkv",
            "fasterrcnn", "deeplabv3", "raft_small", "r3d_18", "unet2d")


def _tensor(spec: dict, generator: torch.Generator) -> torch.Tensor:
    """A tensor like the probe's, from the report's description of an input."""
    shape, dtype = spec["shape"], spec["dtype"]
    if "fill" in spec:
        return torch.full(shape, spec["fill"], dtype=getattr(torch, dtype))
    if dtype in ("float", "float32", "bfloat16", "float16"):
        return torch.randn(shape, generator=generator)
    return torch.randint(0, spec.get("high", 2), shape, generator=generator, dtype=getattr(torch, dtype))


def training_step_seconds(family: str, inputs: list[dict]) -> float:
    """Median of 3: forward and backward from every floating output, in train mode, or in eval
    mode where the training forward needs more than inputs (as the check decides)."""
    from initlint.model_outputs import output_tensors
    from initlint.train_or_eval import train_else_eval

    torch.manual_seed(0)
    model = globals()[family]()
    generator = torch.Generator().manual_seed(0)
    tensors = {spec["name"]: _tensor(spec, generator) for spec in inputs}
    args = [tensors[s["name"]] for s in inputs if not s["keyword"]]
    kwargs = {s["name"]: tensors[s["name"]] for s in inputs if s["keyword"]}

    def step(training: bool) -> float:
        model.train(training)
        started = time.perf_counter()
        outputs = [o for o in output_tensors(model(*args, **kwargs)).values() if o.is_floating_point()
                   and o.requires_grad]
        torch.autograd.backward(outputs, [torch.randn_like(o) for o in outputs])
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    first, note = train_else_eval(step)
    return statistics.median([first] + [step(note is None) for _ in range(2)])


def measure(family: str) -> dict:
    command = [sys.executable, "-c", "from initlint.cli import main; main()", "check", f"{HERE}:{family}", "--output-format", "json",
               "--timings", "--exit-zero", *FLAGS.get(family, [])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"model": family, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    report = json.loads(done.stdout)["reports"][0]
    step = round(training_step_seconds(family, report["inputs"]), 4)
    return {
        "model": family,
        "capture": report["trace"]["mode"],
        "nodes": report["trace"]["nodes"],
        "inputs": {i["name"]: i["shape"] for i in report["inputs"]},
        "findings": sorted(f"{f['code']} {f['module'] or ''}".strip() + (" (info)" if f["severity"] == "info" else "")
                           for f in report["findings"]),
        "check_seconds": report["seconds"],
        "training_step_seconds": step,
        "ratio": round(report["seconds"] / step, 2),
        "note": report["trace"].get("note"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("families", nargs="*", help="a subset of: " + ", ".join(FAMILIES))
    arguments = parser.parse_args()
    rows = []
    for family in arguments.families or (QUICK if arguments.quick else FAMILIES):
        rows.append(measure(family))
        print(json.dumps(rows[-1]), flush=True)
    print("| model | capture | nodes | findings | check | training step | ratio |", file=sys.stderr)
    print("|---|---|---|---|---|---|---|", file=sys.stderr)
    for row in rows:
        if "error" in row:
            print(f"| {row['model']} | error: {row['error']} | | | | | |", file=sys.stderr)
            continue
        findings = ", ".join(row["findings"]) or "none"
        print(f"| {row['model']} | {row['capture']} | {row['nodes']} | {findings} | {row['check_seconds']:.2f} s "
              f"| {row['training_step_seconds']:.2f} s | {row['ratio']:.2f}x |", file=sys.stderr)


if __name__ == "__main__":
    main()

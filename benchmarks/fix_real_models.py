"""``initlint fix --fold`` on model definitions people actually have, through the CLI.

Each model (small Hugging Face configs, torchvision and timm classifiers at 224) is fixed as
a user would fix it, ``initlint fix FACTORY -o DIR --fold``, then the original and DIR are
checked with ``initlint check ... --output-format json``. One JSON line per model: the
constants (kept, declined, left out of the plan since no exact fold carries them), how far the
folded model's output is from the renorm-node model's (in units of its std), the warnings
before and after, the output's std before and after (issue 12: within 2x), whether the written
model runs on one sample (token ids at half the length too: a model captured at the planned
sizes ran only at those), and fix's seconds; a markdown table goes to stderr.

    python benchmarks/fix_real_models.py            # every model, a few minutes
    python benchmarks/fix_real_models.py --quick    # the 2-layer GPT-2 (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from real_models import _tensor, _transformers, tiny_gpt2

from initlint.load import load_target

HERE = Path(__file__).resolve()
_TOKENS = ["--input", "input_ids=8,64:int64"]
_IMAGES = ["--input-shape", "4,3,224,224"]


def tiny_llama():
    """A 4-layer Llama of width 128: gated (SwiGLU) MLPs, RMSNorm, rotary positions."""
    t = _transformers()
    return t.LlamaForCausalLM(t.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                                            num_attention_heads=4, num_key_value_heads=2, vocab_size=1000))


def tiny_bert():
    """A 4-layer BERT of width 128 with its masked-LM head (post-LN, token-type embeddings)."""
    t = _transformers()
    return t.BertForMaskedLM(t.BertConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                                          intermediate_size=256, vocab_size=1000))


def tiny_opt():
    """A 4-layer OPT of width 128 (pre-LN, ReLU MLPs, learned positions)."""
    t = _transformers()
    return t.OPTForCausalLM(t.OPTConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, ffn_dim=256,
                                        vocab_size=1000, word_embed_proj_dim=128))


def tiny_swin():
    """A 2-stage Swin of width 32 at 224: shifted windows, and stochastic depth written out
    (Hugging Face's default rate, 0.1), which must follow eval() in the fixed model."""
    t = _transformers()
    return t.SwinForImageClassification(t.SwinConfig(embed_dim=32, depths=[2, 2], num_heads=[2, 4], num_labels=10))


def _torchvision(name: str):
    """torchvision's model ``name``, imported only when asked for (it is a test extra)."""
    import torchvision

    return getattr(torchvision.models, name)()


def resnet18():
    return _torchvision("resnet18")


def mobilenet_v3_small():
    return _torchvision("mobilenet_v3_small")


def efficientnet_b0():
    """SiLU, squeeze-excitation gates, stochastic depth."""
    return _torchvision("efficientnet_b0")


def timm_efficientnet_b0():
    """timm's: functional batch norms (BatchNormAct2d), stochastic depth (drop_path) as trained."""
    import timm

    return timm.create_model("efficientnet_b0", drop_path_rate=0.2)


def vgg11():
    """No normalization: ReLUs max-pooled, each pool read by a conv."""
    return _torchvision("vgg11")


def alexnet():
    """No normalization, max pools, dropout in the head."""
    return _torchvision("alexnet")


def squeezenet1_1():
    """No normalization: fire modules (1x1 squeeze, 1x1 and 3x3 expands concatenated), max pools."""
    return _torchvision("squeezenet1_1")


FLAGS = {
    **{name: _TOKENS for name in ("tiny_gpt2", "tiny_llama", "tiny_bert", "tiny_opt")},
    **{name: _IMAGES for name in ("tiny_swin", "resnet18", "mobilenet_v3_small", "efficientnet_b0", "timm_efficientnet_b0",
                                  "vgg11", "alexnet", "squeezenet1_1")},
}
MODELS = tuple(FLAGS)
QUICK = ("tiny_gpt2",)


def _cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "initlint", *arguments], capture_output=True, text=True)


def _checked(target: str, flags: list[str]) -> dict:
    done = _cli("check", target, "--output-format", "json", "--exit-zero", *flags)
    if done.returncode != 0:
        raise RuntimeError((done.stderr.strip().splitlines() or ["?"])[-1])
    report = json.loads(done.stdout)["reports"][0]
    return {
        "warnings": sorted(f"{f['code']} {f['module'] or ''}".strip() for f in report["findings"]
                           if f["severity"] != "info"),
        "output_std": [round(n["std"], 4) for n in report["nodes"] if "output" in n["roles"]],
    }


def _runs_on_one_sample(folder: Path) -> bool | str:
    """Whether the written model runs on a batch of one, its token ids at half the planned
    length; else the error."""
    generator = torch.Generator().manual_seed(0)
    args, kwargs = [], {}
    for spec in json.loads((folder / "renorm.json").read_text())["inputs"]:
        shape = [1, *spec["shape"][1:]]
        if not getattr(torch, spec["dtype"]).is_floating_point:
            shape[1:2] = [max(1, size // 2) for size in shape[1:2]]
        value = _tensor({**spec, "shape": shape}, generator)
        if spec.get("keyword"):
            kwargs[spec["name"]] = value
        else:
            args.append(value)
    try:
        with torch.no_grad():
            load_target(str(folder)).model.eval()(*args, **kwargs)
    except Exception as error:  # the model's own error is the measurement
        return f"{type(error).__name__}: {str(error)[:200]}"
    return True


def measure(name: str, folder: Path) -> dict:
    target, flags = f"{HERE}:{name}", FLAGS[name]
    started = time.perf_counter()
    done = _cli("fix", target, "-o", str(folder), "--fold", *flags)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return {"model": name, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    plan = json.loads((folder / "renorm.json").read_text())
    before, after = _checked(target, flags), _checked(str(folder), [])
    return {
        "model": name,
        "capture": plan["capture"],
        "constants": sum(not c["target"].startswith("none") for c in plan["constants"]),
        "declined": plan["declined"],
        "left_out": len(plan["left_out"]) + len(plan["unfolded"]),
        "fold_error": plan["fold_error"],
        "warnings_before": before["warnings"],
        "warnings_after": after["warnings"],
        "output_std_before": before["output_std"],
        "output_std_after": after["output_std"],
        "runs_on_one_sample": _runs_on_one_sample(folder),
        "fix_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("models", nargs="*", help="a subset of: " + ", ".join(MODELS))
    arguments = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in arguments.models or (QUICK if arguments.quick else MODELS):
            rows.append(measure(name, Path(scratch) / name))
            print(json.dumps(rows[-1]), flush=True)
    print("| model | capture | constants | left out (no exact fold) | fold error | warnings before -> after "
          "| output std before -> after | runs on one sample | fix |", file=sys.stderr)
    print("|---|---|---|---|---|---|---|---|---|", file=sys.stderr)
    for row in rows:
        if "error" in row:
            print(f"| {row['model']} | error: {row['error']} | | | | | | | |", file=sys.stderr)
            continue
        warnings = f"{len(row['warnings_before'])} -> {len(row['warnings_after'])}"
        stds = f"{row['output_std_before']} -> {row['output_std_after']}"
        print(f"| {row['model']} | {row['capture']} | {row['constants']} | {row['left_out']} | "
              f"{row['fold_error']:.2g} | {warnings} | {stds} | "
              f"{'yes' if row['runs_on_one_sample'] is True else row['runs_on_one_sample']} | "
              f"{row['fix_seconds']:.1f} s |", file=sys.stderr)


if __name__ == "__main__":
    main()

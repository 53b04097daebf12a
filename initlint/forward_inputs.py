"""Probe inputs read from the model itself, before any graph exists.

``torch.export`` needs concrete inputs before it can capture a graph, so these specs come from
what a model declares: ``forward``'s signature, its registered layers, and a Hugging Face-style
``model.config`` when it has one (a protocol many libraries share, not a class name). The
conventions followed are those of the inputs' names:

- the first parameter of ``forward`` is the main input even when it defaults to None (Hugging
  Face models take ``input_ids=None``, ``pixel_values=None``, ...); required parameters too;
- ``*_ids``: integer ids within the vocabulary of the (decoder's) input embedding;
- ``*mask``: all ones, so nothing is masked (only when the mask is required);
- ``pixel_values`` (and a diffusers UNet's ``sample``): ``(B, C, H, W)`` from
  ``config.num_channels`` / ``config.image_size`` (``sample_size``), else the first registered
  convolution;
- ``input_values`` (raw audio) and ``input_features`` (spectrogram frames): long enough for the
  chain of ``Conv1d`` layers at the front of the model to yield ``config.max_source_positions``
  frames, else ``DEFAULT_SPATIAL[1]``;
- ``decoder_input_ids`` whenever ``forward`` takes it (an encoder-decoder);
- any other name: shaped from the first registered Linear / Conv / Embedding.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from initlint.errors import InitlintError
from initlint.inputs import DEFAULT_BATCH, DEFAULT_SPATIAL, DEFAULT_TOKENS, InputSpec, _from_module, _spec_from

_KEYWORD_HINT = "--input NAME=SHAPE:DTYPE (e.g. --input input_ids=8,32:int64)"


@dataclass(frozen=True)
class _Wanted:
    """A parameter of ``forward`` the probe must supply."""

    name: str
    keyword: bool
    positional_slot: bool
    """Whether ``--input-shape`` values are matched to it (in order)."""


def _parameters(model: nn.Module) -> list[inspect.Parameter]:
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return list(parameters)


def _wanted(parameters: list[inspect.Parameter]) -> list[_Wanted]:
    """Required parameters; else the first one as the main input; plus decoder ids."""
    named = [p for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    wanted = [_Wanted(p.name, p.kind == p.KEYWORD_ONLY, p.kind != p.KEYWORD_ONLY)
              for p in named if p.default is p.empty]
    if not any(w.positional_slot for w in wanted) and named and named[0].default is None:
        wanted.insert(0, _Wanted(named[0].name, named[0].kind != named[0].POSITIONAL_ONLY, True))
    if wanted and any(p.name == "decoder_input_ids" for p in named) and \
            all(w.name != "decoder_input_ids" for w in wanted):
        wanted.append(_Wanted("decoder_input_ids", True, False))
    return wanted


_LITERAL_DEFAULTS = (type(None), bool, int, float, str)


def left_at_default(model: nn.Module, positional: int, named: Collection[str]) -> dict[str, object]:
    """The parameters of ``forward`` that the probe leaves at a literal default (None, a flag, a
    number), with it: not among the first ``positional`` ones, not ``named`` by the caller, and
    not an input these conventions supply (the main one, decoder ids). fx traces them as these
    values, so that ``if mask is not None:`` or ``if is_causal:`` takes the branch the probe
    runs (as a symbol, a parameter is never None, and no flag)."""
    parameters = _parameters(model)
    wanted = {w.name for w in _wanted(parameters)}
    return {p.name: p.default for i, p in enumerate(parameters)
            if type(p.default) in _LITERAL_DEFAULTS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and i >= positional and p.name not in wanted and p.name not in named}


def _config_value(model: nn.Module, *keys: str) -> object:
    config = getattr(model, "config", None)
    for key in keys:
        value = getattr(config, key, None)
        if value is not None:
            return value
    return None


def _config_int(model: nn.Module, key: str) -> int | None:
    value = _config_value(model, key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _embedding_of(owner: nn.Module) -> tuple[int, str] | None:
    """Vocabulary size of ``owner``'s input embedding: ``get_input_embeddings()`` where the
    model offers it, else its first registered Embedding."""
    getter = getattr(owner, "get_input_embeddings", None)
    if callable(getter):
        try:
            embedding = getter()
        except Exception:  # a base class that does not implement it
            embedding = None
        if isinstance(embedding, (nn.Embedding, nn.EmbeddingBag)):
            return embedding.num_embeddings, f"the input embedding of {type(owner).__name__}"
    first = next((m for m in owner.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))), None)
    if first is None:
        return None
    return first.num_embeddings, f"the first registered Embedding of {type(owner).__name__}"


def _vocabulary(model: nn.Module, name: str) -> tuple[int, str] | None:
    owner = model
    getter = getattr(model, "get_decoder", None)
    if name.startswith("decoder_") and callable(getter):
        try:
            decoder = getter()
        except Exception:
            decoder = None
        owner = decoder if isinstance(decoder, nn.Module) else model
    return _embedding_of(owner) or _embedding_of(model)


def _tokens(model: nn.Module) -> int:
    limit = _config_int(model, "max_position_embeddings") or _config_int(model, "n_positions")
    return min(DEFAULT_TOKENS, limit) if limit else DEFAULT_TOKENS


def _first_conv(model: nn.Module, dims: int | None = None) -> nn.modules.conv._ConvNd | None:
    return next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)
                 and (dims is None or len(m.kernel_size) == dims)), None)


def _conv1d_chain(model: nn.Module) -> list[nn.Conv1d]:
    """The Conv1d layers at the front of the model, each fed by the previous one's channels."""
    chain: list[nn.Conv1d] = []
    for module in model.modules():
        if not isinstance(module, nn.Conv1d):
            continue
        if chain and module.in_channels != chain[-1].out_channels:
            break
        chain.append(module)
    return chain


def _chain_length(chain: list[nn.Conv1d], frames: int) -> int:
    """The input length for which ``chain`` yields ``frames`` frames: the smallest one (the
    convolution arithmetic run backwards), or frames x total stride if that is longer (a model
    that checks its length expects exactly that)."""
    length = frames
    for conv in reversed(chain):
        padding = conv.padding[0] if isinstance(conv.padding, tuple) else 0  # 'same'/'valid' as 0
        length = (length - 1) * conv.stride[0] - 2 * padding + conv.dilation[0] * (conv.kernel_size[0] - 1) + 1
    return max(length, frames * math.prod(c.stride[0] for c in chain))


def _image(model: nn.Module, name: str, batch: int) -> InputSpec | None:
    conv = _first_conv(model)
    channels = _config_int(model, "num_channels") or (conv.in_channels if conv is not None else None)
    if channels is None:
        return None
    dims = len(conv.kernel_size) if conv is not None else 2
    size = _config_value(model, "image_size", "sample_size")
    if isinstance(size, int) and not isinstance(size, bool):
        spatial = (size,) * dims
    elif isinstance(size, (list, tuple)) and len(size) == dims and all(isinstance(s, int) for s in size):
        spatial = tuple(size)
    else:
        spatial = (DEFAULT_SPATIAL[dims],) * dims
    where = ", ".join(filter(None, [
        "config.num_channels" if _config_int(model, "num_channels") else f"the first {type(conv).__name__}",
        "config.image_size" if size is not None else None,  # (or diffusers' config.sample_size)
    ]))
    return InputSpec(name, (batch, channels, *spatial), inferred_from=where)


def _sequence(model: nn.Module, name: str, batch: int) -> InputSpec | None:
    chain = _conv1d_chain(model)
    if not chain:
        return None
    positions = _config_int(model, "max_source_positions")
    length = _chain_length(chain, positions or DEFAULT_SPATIAL[1])
    mels = _config_int(model, "num_mel_bins") if name == "input_features" else None
    channels = mels or chain[0].in_channels
    frames = "config.max_source_positions" if positions else f"{DEFAULT_SPATIAL[1]}"
    where = f"the {len(chain)} Conv1d layer(s) at the front, sized for {frames} frames"
    shape = (batch, length) if name == "input_values" and channels == 1 else (batch, channels, length)
    return InputSpec(name, shape, inferred_from=where + (", config.num_mel_bins" if mels else ""))


def _ids_spec(model: nn.Module, name: str, shape: tuple[int, ...], given: InputSpec | None = None) -> InputSpec:
    vocabulary = _vocabulary(model, name)
    high, where = vocabulary if vocabulary else (None, None)
    dtype = given.dtype if given is not None and given.dtype is not None else torch.int64
    if given is not None:
        return replace(given, integer_high=high if not dtype.is_floating_point else None)
    return InputSpec(name, shape, integer_high=high, dtype=dtype, inferred_from=where)


def _is_ids(name: str) -> bool:
    return name.endswith("ids")


def _is_mask(name: str) -> bool:
    return name.endswith("mask")


def _infer(model: nn.Module, name: str, batch: int, tokens: tuple[int, int], main: bool) -> InputSpec | None:
    """The spec a user would expect for input ``name``, or None when nothing tells."""
    if _is_ids(name):
        return _ids_spec(model, name, tokens)
    if _is_mask(name):
        return InputSpec(name, tokens, dtype=torch.int64, fill=1, inferred_from="an all-ones mask")
    if name in ("pixel_values", "sample"):  # "sample": the noisy image of a diffusers UNet
        return _image(model, name, batch)
    if name in ("input_values", "input_features"):
        return _sequence(model, name, batch)
    if not main:
        return None
    first = next((layer for m in model.modules() if (layer := _from_module(m)) is not None), None)
    if first is None:
        return None
    first = replace(first, description=first.description.replace("first layer", "first registered layer"))
    return _spec_from(name, first, batch)


def _from_shape(model: nn.Module, name: str, shape: tuple[int, ...], main: bool) -> InputSpec:
    """A spec for a shape given with ``--input-shape``: ids stay within the vocabulary."""
    first = next((layer for m in model.modules() if (layer := _from_module(m)) is not None), None)
    if _is_ids(name) or (main and not _is_mask(name) and first is not None and first.family == "embedding"):
        return _ids_spec(model, name, shape)
    if _is_mask(name):
        return InputSpec(name, shape, dtype=torch.int64, fill=1)
    return InputSpec(name, shape)


def _from_named(model: nn.Module, spec: InputSpec) -> InputSpec:
    """A spec given by name (``--input``): integer ids within the vocabulary, masks all ones."""
    if spec.dtype is not None and not spec.dtype.is_floating_point:
        if _is_mask(spec.name) or spec.dtype == torch.bool:
            return replace(spec, fill=1)
        return _ids_spec(model, spec.name, spec.shape, spec)
    return spec


def _check_names(parameters: list[inspect.Parameter], named: Sequence[InputSpec], model: nn.Module) -> None:
    names = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if any(p.kind == p.VAR_KEYWORD for p in parameters):
        return
    for spec in named:
        if spec.name not in names:
            raise InitlintError(
                f"input {spec.name!r} is not a parameter of {type(model).__name__}.forward (its "
                f"parameters: {', '.join(names) or 'none'}); name one of them in --input NAME=SHAPE:DTYPE."
            )


def specs_before_capture(
    model: nn.Module, positional_shapes: Sequence[Sequence[int]] | None,
    named_specs: Sequence[InputSpec] = (), batch: int = DEFAULT_BATCH,
) -> list[InputSpec]:
    """One spec per input ``model.forward`` needs, from the shapes given by position
    (``--input-shape``), the specs given by name (``--input``), and inference for the rest.
    Positional inputs come first, in ``forward``'s order; keyword inputs follow."""
    parameters = _parameters(model)
    _check_names(parameters, named_specs, model)
    by_name = {spec.name: _from_named(model, spec) for spec in named_specs}
    wanted = _wanted(parameters)
    slots = [w for w in wanted if w.positional_slot and w.name not in by_name]
    shapes = [tuple(s) for s in positional_shapes or ()]
    if shapes and len(shapes) != len(slots):
        names = ", ".join(w.name for w in slots)
        raise InitlintError(
            f"the model takes {len(slots)} input(s) ({names}) but {len(shapes)} --input-shape "
            "value(s) were given; pass one --input-shape per input, in order, or name each with "
            f"{_KEYWORD_HINT}."
        )
    main = wanted[0].name if wanted else None
    for slot, shape in zip(slots, shapes):
        by_name[slot.name] = _from_shape(model, slot.name, shape, slot.name == main)
    known = list(by_name.values())
    batch = known[0].shape[0] if known else batch
    lead = by_name.get(main) if main else None
    tokens = tuple(lead.shape[:2]) if lead is not None and lead.is_integer and len(lead.shape) >= 2 \
        else (batch, _tokens(model))
    specs = []
    for w in wanted:
        spec = by_name.pop(w.name, None) or _infer(model, w.name, batch, tokens, w.name == main)
        if spec is None:
            raise _uninferable(model, w.name, len(wanted))
        specs.append(replace(spec, keyword=w.keyword))
    specs.extend(replace(spec, keyword=True) for spec in by_name.values())  # optional inputs given by name
    return sorted(specs, key=lambda s: s.keyword)


def _uninferable(model: nn.Module, name: str, count: int) -> InitlintError:
    shape_hint = " or --input-shape (batch first, once per positional input)" if count == 1 else ""
    return InitlintError(
        f"cannot infer the shape of input {name!r} of {type(model).__name__}.forward: no layer or "
        f"config attribute tells it. Pass it with --input {name}=SHAPE:DTYPE (e.g. --input "
        f"{name}=8,32:int64){shape_hint}, inputs = {{{name} = \"8,32:int64\"}} in a [tool.initlint] "
        f"target, or initlint.check(model, {name}=tensor) in Python."
    )

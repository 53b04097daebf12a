"""The Python API: ``check(model, *example_inputs, **options) -> Report``.

The pipeline runs one way: trace -> probe -> analyse -> rules -> report. The model given is
never modified: the probe has no side effects, and a model is copied before it is moved to
another device.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

import torch
import torch.nn as nn

from initlint import validate
from initlint.errors import InitlintError
from initlint.graph import SignalGraph
from initlint.forward_inputs import left_at_default, specs_before_capture
from initlint.wrappers import unwrapped
from initlint.inputs import (
    DEFAULT_BATCH, InputSpec, ProbeInputs, draw, parse_named_input, refuse_mapping_inputs, required_inputs, specs_for,
    with_vocabularies,
)
from initlint.materialize import PieceByPiece, on_meta
from initlint.memory import MemoryBudget
from initlint.locations import SourceLocation, definition_of, module_definition_sites
from initlint.preserve import model_preserved
from initlint.kernel import probe_kernel
from initlint.probe import probe
from initlint.progress import Progress, for_model
from initlint.report import Report
from initlint.selection import ignored_in_module, select_rules, unmatched_globs
from initlint.hooks import probe_with_hooks
from initlint.known_leaves import known_leaves
from initlint.trace import TORCH_CONTAINERS, TraceFailure, Traced, tag_nodes, trace
from initlint.user_code import exits_refused


@dataclass
class CheckOptions:
    """Everything ``check`` can be told; the CLI fills the same object from its flags."""

    input_shapes: Sequence[Sequence[int]] | None = None
    """Shapes of the positional inputs, in ``forward``'s order (``--input-shape``)."""
    inputs: Mapping[str, str] = field(default_factory=dict)
    """Inputs by name: ``{"input_ids": "8,32:int64"}`` (``--input``; float by default)."""
    input_tensors: Mapping[str, torch.Tensor] = field(default_factory=dict)
    """Keyword example inputs: ``check(model, input_ids=ids)`` puts ``ids`` here."""
    require_graph: bool = False
    """A model that cannot be captured as a graph (hooks mode) is an error, not a partial check."""
    device: str | None = None
    """cpu, cuda, mps, auto, or None for the device the model's parameters are on."""
    seed: int = 0
    select: Sequence[str] | None = None
    ignore: Sequence[str] | None = None
    thresholds: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Per-rule overrides: ``{"IL101": {"band": 8.0}}``."""
    leaf_modules: Sequence[type[nn.Module]] = ()
    """Extra module classes that tracing treats as opaque layers."""
    wrap_functions: Sequence[Callable] = ()
    """Functions that tracing records as single calls instead of tracing through."""
    extend_select: Sequence[str] = ()
    per_module_ignores: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Module-path glob -> rule codes ignored for findings in matching modules."""
    target: str | None = None
    """The name the report uses for this model."""
    batch_size: int = DEFAULT_BATCH
    """Probe batch when shapes are inferred (``fix`` uses more: its constants are estimates)."""
    show_progress: bool = False
    """A progress bar on stderr while a large model is traced and probed (only on a terminal)."""


@dataclass
class ModelSource:
    """Where the model's layers were written; ``load`` knows it, a bare model does not."""

    construction_sites: dict[nn.Module, SourceLocation] = field(default_factory=dict)
    factory: SourceLocation | None = None


def resolve_device(requested: str | None, model: nn.Module) -> torch.device:
    if requested is None:
        first = next(iter(model.parameters()), None)
        return first.device if first is not None and not first.is_meta else torch.device("cpu")
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if requested not in available:
        raise InitlintError(f"unknown device {requested!r}; use cpu, cuda, mps or auto.")
    if not available[requested]:
        raise InitlintError(
            f"device {requested!r} was requested but this machine has none (torch reports it "
            "unavailable); use --device cpu, or --device auto to take the best available."
        )
    return torch.device(requested)


def _on_device(model: nn.Module, device: torch.device) -> nn.Module:
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.device == device for t in tensors):
        return model
    return copy.deepcopy(model).to(device)


def _float_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


MIN_BATCH = DEFAULT_BATCH
"""The fewest samples a probe draws. In a batch of one nothing varies across samples: the
rules that read it are blind (the bundled SE-ResNet's three pinned gates, IL401, went
unreported at --input-shape 1,3,32,32), and fix's constants, fitted to what varies within one
sample, pinned the gates of the same model when it was checked on eight."""


def _with_min_batch(options: CheckOptions) -> tuple[CheckOptions, str | None]:
    """``options`` with the batch of the inputs given by shape (``--input-shape``, ``--input``)
    raised to ``MIN_BATCH``, and a note where it was. Only dim 0 changes (batch first, as those
    options say), on the inputs that share the first one's; example tensors stay as given."""
    named = {name: parse_named_input(name, text) for name, text in options.inputs.items()}
    shapes = [tuple(s) for s in options.input_shapes or ()] + [spec.shape for spec in named.values()]
    if not shapes or shapes[0][0] >= MIN_BATCH:
        return options, None
    given = shapes[0][0]

    def raised(shape: tuple[int, ...]) -> tuple[int, ...]:
        return (MIN_BATCH, *shape[1:]) if shape[0] == given else shape

    def raised_text(name: str, text: str) -> str:  # "2,32:int64" -> "8,32:int64", its dtype kept
        _, colon, dtype = text.partition(":")
        return ",".join(map(str, raised(named[name].shape))) + colon + dtype

    inputs = {name: raised_text(name, text) for name, text in options.inputs.items()}
    input_shapes = [raised(tuple(s)) for s in options.input_shapes] if options.input_shapes else options.input_shapes
    note = (f"probed on a batch of {MIN_BATCH} where {given} was given: the rules, and fix's constants, read what "
            "varies across samples")
    return replace(options, input_shapes=input_shapes, inputs=inputs), note


def _probe_inputs(graph_module, example_inputs, options, device, dtype, model, budget) -> ProbeInputs:
    """The probe batch: the caller's tensors, else drawn for the given or inferred specs (from
    the traced graph, or from the model's signature, layers and config), once the budget allows.
    Inputs the caller gives by name are used as given; the others are drawn."""
    if graph_module is not None:
        refuse_mapping_inputs(graph_module)
    named = [parse_named_input(name, text) for name, text in options.inputs.items()]
    named += [InputSpec(name, tuple(t.shape), dtype=t.dtype, keyword=True) for name, t in options.input_tensors.items()]
    if example_inputs and not named:
        specs = [InputSpec(f"input_{i}", tuple(t.shape), dtype=t.dtype) for i, t in enumerate(example_inputs)]
        budget.check_inputs(specs, dtype)
        return ProbeInputs(specs, [t.to(device) for t in example_inputs])
    shapes = [tuple(s) for s in options.input_shapes or [t.shape for t in example_inputs]] or None
    specs = None
    if graph_module is not None and not named and required_inputs(graph_module):
        try:
            specs = specs_for(graph_module, shapes, options.batch_size)
        except InitlintError:
            pass  # e.g. the first consumer is a leaf module: the model's registered layers may tell
    if specs is None:
        specs = specs_before_capture(model, shapes, named, options.batch_size)
        if graph_module is not None:
            specs = with_vocabularies(specs, graph_module)
    budget.check_inputs(specs, dtype)
    drawn = draw(specs, options.seed, device, dtype)
    positional = iter(example_inputs)
    for i, spec in enumerate(specs):
        given = options.input_tensors.get(spec.name) if spec.keyword else next(positional, None)
        if given is not None:
            drawn.tensors[i] = given.to(device)
    return drawn


def _probing(run: Callable[[], object], inputs: ProbeInputs) -> object:
    """Run a probe; a failure inside the model becomes bad input that names the shapes."""
    try:
        return run()
    except InitlintError:
        raise
    except Exception as error:
        shapes = ", ".join(str(tuple(s.shape)) for s in inputs.specs)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise InitlintError(
            f"probing the model with inputs of shape {shapes} failed: {type(error).__name__}: "
            f"{reason}. Check the inputs (--input-shape, batch first, or --input NAME=SHAPE:DTYPE) and the device."
        ) from error


def _traced(model: nn.Module, options: CheckOptions, sites: dict, fallback: SourceLocation | None,
            progress: Progress, positional: int) -> Traced:
    """fx with the configured leaves; failing that, also with the modules and functions that
    imported libraries declare untraceable (kept whole, so less of the model is seen). The
    inputs the probe leaves at a literal default (beyond the ``positional`` ones given) are
    traced as that value."""
    defaults = left_at_default(model, positional, {*options.inputs, *options.input_tensors})
    try:
        return trace(model, options.leaf_modules, sites, fallback, options.wrap_functions, progress, defaults)
    except TraceFailure:
        library_leaves, library_functions = known_leaves()
        if not (library_leaves or library_functions):
            raise
    traced = trace(model, [*options.leaf_modules, *library_leaves], sites, fallback,
                   [*options.wrap_functions, *library_functions], progress, defaults)
    traced.note = "traced with the modules that imported libraries declare untraceable kept whole"
    return traced


def _captured(
    model: nn.Module, options: CheckOptions, sites: dict, fallback: SourceLocation | None, progress: Progress,
    draw_inputs: Callable[[object], ProbeInputs], positional: int, any_size: bool,
) -> tuple[Traced, ProbeInputs]:
    """The model as a graph, with the probe inputs: fx symbolic tracing (which infers inputs
    from its graph) where it works, else torch.export with concrete inputs, which runs the
    model's own Python and so captures keyword inputs, size reads and library models (at
    symbolic sizes with ``any_size``). Raises ``TraceFailure``, with both reasons, when neither
    captures it."""
    from initlint.capture import CaptureFailure, capture_with_export

    try:
        traced = _traced(model, options, sites, fallback, progress, positional)
    except TraceFailure as failure:
        fx_failure = failure
    else:
        return traced, draw_inputs(traced.graph_module)
    try:
        inputs = draw_inputs(None)
    except InitlintError as error:
        fx_failure.reason += f"; torch.export needs the inputs first, and {error}"
        raise fx_failure from None
    try:
        graph_module, eval_note = capture_with_export(model, inputs, options.leaf_modules, any_size)
    except CaptureFailure as failure:
        fx_failure.reason += f"; torch.export failed too: {failure.reason}"
        return _with_containers_whole(model, options, sites, fallback, progress, positional, fx_failure), inputs
    tag_nodes(graph_module, sites, fallback)
    note = "; ".join(filter(None, [f"{fx_failure.reason}, so torch.export captured it", eval_note]))
    return Traced(graph_module, "export", note), inputs


def _with_containers_whole(model: nn.Module, options: CheckOptions, sites: dict, fallback: SourceLocation | None,
                           progress: Progress, positional: int, failure: TraceFailure) -> Traced:
    """fx with torch.nn's containers of layers (``TORCH_CONTAINERS``) kept whole, as fx keeps
    them, where neither capture could enter them: their insides go unchecked, which the note
    says. Raises ``failure`` where the model has none, or fx fails all the same."""
    containers = {type(m) for m in model.modules() if isinstance(m, TORCH_CONTAINERS)}
    if not containers:
        raise failure from None
    whole = replace(options, leaf_modules=[*options.leaf_modules, *containers])
    try:
        traced = _traced(model, whole, sites, fallback, progress, positional)
    except TraceFailure:
        raise failure from None
    names = ", ".join(sorted(f"nn.{cls.__name__}" for cls in containers))
    traced.note = "; ".join(filter(None, [f"{failure.reason}; so its {names} layers were traced whole, and what they "
                                          "compute inside goes unchecked", traced.note]))
    return traced


@dataclass
class Analysed:
    """What the probe learned about a model: the stages up to the rules and the renorm plan."""

    model: nn.Module
    traced: Traced
    inputs: ProbeInputs
    graph: SignalGraph
    device: torch.device
    probe_note: str | None


def analyse(
    model: nn.Module, example_inputs: Sequence[torch.Tensor], options: CheckOptions, source: ModelSource,
    needs_graph: str | None = None, any_size: bool = False,
) -> Analysed:
    """Trace, probe and analyse ``model``: the stages that check and fix share. A model on the
    meta device is probed one layer at a time, each built with its own initializer. With
    ``needs_graph`` (the sentence that says why), a model no capture turns into a graph is
    refused before it is probed, instead of being probed with hooks. With ``any_size``, a model
    that torch.export captures is captured at symbolic sizes where it allows it (the code that
    ``fix`` writes must run at any batch size; export then takes about twice as long). A model
    inside a runtime wrapper (DataParallel, torch.compile) is probed as the model inside."""
    model, wrapper_note = unwrapped(model)
    options, batch_note = _with_min_batch(options)
    device = resolve_device(options.device, model)
    pieces = None
    if on_meta(model):
        pieces = PieceByPiece(model, device, options.seed)
    else:
        model = _on_device(model, device)
    sites = module_definition_sites(model, source.construction_sites)
    progress = for_model(model, options.show_progress)
    fallback = source.factory or definition_of(type(model))
    dtype = _float_dtype(model)
    budget = MemoryBudget(device)

    def draw_inputs(graph_module: object) -> ProbeInputs:
        return _probe_inputs(graph_module, example_inputs, options, device, dtype, model, budget)

    positional = len(example_inputs) or len(options.input_shapes or ())

    try:
        if pieces is not None:  # a meta model runs layer by layer through fx's module calls
            traced = _traced(model, options, sites, fallback, progress, positional)
            inputs = draw_inputs(traced.graph_module)
        else:
            traced, inputs = _captured(model, options, sites, fallback, progress, draw_inputs, positional, any_size)
    except TraceFailure as failure:
        reason = failure.reason
        if needs_graph:  # refused before any probing
            raise InitlintError(f"{reason}. {needs_graph}") from None
        if pieces is not None:
            raise InitlintError(
                f"{reason}. A model on the meta device is probed one layer at a time through its traced "
                "graph, so torch.fx must trace it: declare the untraceable block a leaf module, or build "
                "the model on a real device."
            ) from None
        inputs = draw_inputs(None)
        traced, probe_note = _probing(lambda: probe_with_hooks(
            model, inputs, options.seed, options.leaf_modules, sites, fallback, reason, progress, budget,
        ), inputs)
    else:
        probe_note = _probing(
            lambda: probe(traced.graph_module, inputs, options.seed, progress, budget, pieces), inputs)
        probe_note = "; ".join(filter(None, [probe_note, probe_kernel(traced.graph_module, inputs, pieces)])) or None
    if pieces is not None:
        probe_note = "; ".join(filter(None, [pieces.note(), probe_note]))
    traced.note = "; ".join(filter(None, [wrapper_note, batch_note, traced.note])) or None
    return Analysed(model, traced, inputs, SignalGraph(traced.graph_module), device, probe_note)


MODEL_EXITS = ("the model, while it was traced or probed,", "its forward must return its output, not exit.")
"""What ``exits_refused`` says when a forward calls ``sys.exit``."""


def run_check(
    model: nn.Module, example_inputs: Sequence[torch.Tensor], options: CheckOptions, source: ModelSource
) -> Report:
    """The pipeline behind ``check`` and the CLI."""
    started = time.perf_counter()
    rules = select_rules(options.select, options.ignore, options.thresholds, options.extend_select)
    needs_graph = (
        "require-graph is set, so a model that cannot be captured as a graph fails instead of being "
        "checked with the rules hooks allow: declare the block that cannot be captured a leaf module "
        "(leaf-modules in [tool.initlint]), or drop require-graph (--require-graph / require-graph = true) "
        "to accept a partial check."
    ) if options.require_graph else None
    with model_preserved(model), exits_refused(*MODEL_EXITS):
        analysed = analyse(model, example_inputs, options, source, needs_graph)
    skipped = [r for r in rules if r.needs_structure and analysed.traced.mode == "hooks"]
    findings = [
        finding for rule in rules if rule not in skipped for finding in rule.check(analysed.graph)
        if not ignored_in_module(finding, options.per_module_ignores)
    ]
    return Report(
        target=options.target or type(model).__name__,
        trace_mode=analysed.traced.mode,
        trace_note=analysed.traced.note,
        skipped_rules=[rule.code for rule in skipped],
        rule_count=len(rules),
        graph=analysed.graph,
        inputs=analysed.inputs.specs,
        device=str(analysed.device),
        findings=findings,
        probe_note=analysed.probe_note,
        seconds=time.perf_counter() - started,
        unmatched_ignores=unmatched_globs(options.per_module_ignores, _module_paths(analysed)),
    )


def _module_paths(analysed: Analysed) -> set[str]:
    """The model's module paths, as findings name them."""
    named = (path for path, _ in analysed.model.named_modules())
    return {*named, *(v.module for v in analysed.graph.nodes.values() if v.module is not None)}


def check(model: nn.Module, *example_inputs: torch.Tensor, **options: object) -> Report:
    """Probe ``model`` and run the rules. Options are the fields of ``CheckOptions``.

    ``example_inputs``, when given, are the probe batch (dim 0 is the batch); a keyword whose
    value is a tensor and that names no option is a keyword input (``input_ids=ids``). Inputs
    not given are drawn: N(0, 1) of ``input_shapes`` / ``inputs``, or inferred from the model.
    """
    return run_check(require_module(model, "initlint.check"), example_inputs, parse_options(options), ModelSource())


def parse_options(options: Mapping[str, object]) -> CheckOptions:
    """Keyword options of the Python API as ``CheckOptions``: a keyword whose value is a tensor
    and that names no option is a keyword input of the model. An unknown option is bad input."""
    names = {f.name for f in fields(CheckOptions)}
    tensors = {k: v for k, v in options.items() if isinstance(v, torch.Tensor) and k not in names}
    settings = {k: v for k, v in options.items() if k not in tensors}
    if tensors:
        settings["input_tensors"] = {**settings.get("input_tensors", {}), **tensors}
    try:
        parsed = CheckOptions(**settings)
    except TypeError as error:
        raise InitlintError(f"{error}; see initlint.CheckOptions for the options.") from None
    return validated(parsed)


_VALIDATORS: dict[str, Callable[[object], object]] = {
    "input_shapes": validate.input_shapes,
    "seed": validate.seed,
    "select": functools.partial(validate.codes, allow_empty=False),
    "ignore": validate.codes,
    "extend_select": lambda value: validate.codes(value) or [],
    "thresholds": validate.thresholds,
    "per_module_ignores": validate.per_module_ignores,
    "leaf_modules": validate.module_classes,
    "wrap_functions": validate.functions,
    "batch_size": validate.batch_size,
}


def validated(options: CheckOptions, names: Mapping[str, str] | None = None) -> CheckOptions:
    """``options`` with every setting checked and normalized (a single code string becomes a
    list); ``names`` says how the user spelled each setting (``--seed``), for the message."""
    names = names or {}
    values = {
        key: validate.checked(names.get(key, f"option {key}"), check, getattr(options, key))
        for key, check in _VALIDATORS.items()
    }
    return replace(options, **values)


def require_module(model: object, call: str) -> nn.Module:
    """The API takes an ``nn.Module``; anything else (None, the factory itself) is bad input."""
    if not isinstance(model, nn.Module):
        hint = " (call it to build the model first)" if callable(model) else ""
        raise InitlintError(f"{call} takes a torch.nn.Module, not {type(model).__name__}{hint}; pass the model itself.")
    return model

"""Trace a model into a torch.fx GraphModule and tag each node with its module and source line.

Standard ``torch.nn`` layers (not those made of other layers: ``TORCH_CONTAINERS``) and
initlint's renorm layers stay leaves; callers can add their
own leaf classes for blocks that fx cannot see into. The GraphModule shares parameters with the model, so later
stages must treat it as read-only.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch.fx._symbolic_trace import _assert_is_none
import torch.nn as nn

from initlint.errors import InitlintError
from initlint.grad_mode import record_grad_mode
from initlint.inplace import functionalize_inplace
from initlint.locations import SourceLocation, innermost_user_frame, with_own_line
from initlint.progress import Progress
from initlint.module_calls import collapse_in_place
from initlint.ops import drop_paths
from initlint.renorm_layer import RenormLayer, StochasticLayer
from initlint.safe_code import ORIGINAL_PATH, safe_root
from initlint.train_flag import follow_training_flag

MODULE = "initlint_module"
LOCATION = "initlint_location"
CALL_SITE = "initlint_call_site"
"""The user's line that made a node while tracing; LOCATION falls back from it to the module's site."""
TORCH_CONTAINERS: tuple[type[nn.Module], ...] = (
    nn.Transformer, nn.TransformerEncoder, nn.TransformerDecoder, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
"""torch.nn's layers made of other layers, which fx would keep whole as it keeps every torch.nn
module: traced into, so that their Linear layers, activations and norms are checked and fixed
(kept whole, a post-LN ``nn.TransformerEncoder`` was one opaque node, and ``fix`` could neither
shape its activations nor write code for it). Their fast-path checks branch on tensors, which
symbolic tracing cannot follow, so torch.export captures such a model."""


@dataclass
class Traced:
    graph_module: fx.GraphModule
    mode: str
    """"fx", or "hooks" when fx could not trace the model (see ``initlint.hooks``)."""
    note: str | None


class TraceFailure(InitlintError):
    """torch.fx could not trace the model; ``reason`` says why, in one line."""

    def __init__(self, model: nn.Module, error: Exception) -> None:
        first_line = (str(error).strip().splitlines() or [""])[0]
        first_sentence = first_line.split(". ")[0]
        self.reason = f"torch.fx could not trace {type(model).__name__}: {type(error).__name__}: {first_sentence}"
        super().__init__(
            f"{self.reason}. Data-dependent control flow cannot be traced symbolically; declare the "
            "block that contains it a leaf module: leaf-modules = [\"package.module.Block\"] in "
            "[tool.initlint], or initlint.check(..., leaf_modules=[Block])."
        )


class _Tracer(fx.Tracer):
    def __init__(
        self, leaf_modules: Sequence[type[nn.Module]], wrap_functions: Sequence[Callable], progress: Progress
    ) -> None:
        # stochastic depth kept whole, so the probe switches it off as it does dropout
        super().__init__(autowrap_functions=(*wrap_functions, *drop_paths()))
        # fx's own stack traces (record_stack_traces) import torch._dynamo and _inductor: 1.5 s
        self._extra_leaves = (RenormLayer, StochasticLayer, *leaf_modules)
        self._progress = progress

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if isinstance(module, self._extra_leaves):
            return True
        return not isinstance(module, TORCH_CONTAINERS) and super().is_leaf_module(module, qualified_name)

    def create_node(self, kind: str, *args: object, **kwargs: object) -> fx.Node:
        node = super().create_node(kind, *args, **kwargs)
        if kind.startswith("call_"):  # created while the user's forward runs: it is on the stack
            node.meta[CALL_SITE] = innermost_user_frame(outermost=fx.Tracer.trace.__code__)
        return node

    def trace(self, root: nn.Module, concrete_args: dict | None = None) -> fx.Graph:
        with record_grad_mode(self):
            return super().trace(root, concrete_args)

    def call_module(self, module: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> object:
        self._progress.advance()  # once per module call: the model's modules are the total
        return super().call_module(module, forward, args, kwargs)


def _drop_specialized_inputs(graph: fx.Graph) -> None:
    """Remove the inputs fx traced as concrete values, with the guard it adds for each (that
    the value is still None, or equal to the one traced): the probe leaves them out, as export
    does, and generated code has no use for fx's private guard."""
    for guard in [n for n in graph.nodes if n.op == "call_function" and n.target in (_assert_is_none, torch._assert)]:
        if guard.target is torch._assert and not (
                isinstance(guard.args[0], fx.Node) and guard.args[0].target is operator.eq
                and "has been specialized to have value" in str(guard.args[1])):
            continue  # the model's own assertion
        compared = guard.args[0]
        graph.erase_node(guard)
        if compared.op == "call_function" and not compared.users:  # eq(input, value)
            placeholder = compared.args[0]
            graph.erase_node(compared)
            compared = placeholder
        if isinstance(compared, fx.Node) and compared.op == "placeholder" and not compared.users:
            graph.erase_node(compared)


def _drop_unused_variadic_inputs(graph: fx.Graph) -> None:
    """Remove ``*args`` and ``**kwargs`` where ``forward`` takes them and does not use them
    (Hugging Face's models in transformers 5 take ``**kwargs``): no input to give a value."""
    for node in [n for n in graph.nodes if n.op == "placeholder" and str(n.target).startswith("*") and not n.users]:
        graph.erase_node(node)


def owning_module(node: fx.Node) -> str | None:
    """The qualified path of the module a node belongs to ('' is the root)."""
    if node.op == "call_module":
        return str(node.meta.get(ORIGINAL_PATH, node.target))
    stack = node.meta.get("nn_module_stack")
    if stack:
        path, _ = next(reversed(stack.values()))
        return path
    return None if node.op in ("placeholder", "output") else ""


def trace(
    model: nn.Module,
    leaf_modules: Sequence[type[nn.Module]] = (),
    module_sites: dict[str, SourceLocation] | None = None,
    fallback: SourceLocation | None = None,
    wrap_functions: Sequence[Callable] = (),
    progress: Progress = Progress(),
    defaults: Mapping[str, object] | None = None,
) -> Traced:
    """Symbolically trace ``model``; tag nodes with ``MODULE`` and ``LOCATION`` metadata.

    A node's location is where the user's code calls it, else where its module was defined
    (``module_sites``), else ``fallback`` (typically the factory). The parameters of ``forward``
    in ``defaults`` are traced as the values given there, and leave the graph.
    """
    tracer = _Tracer(leaf_modules, wrap_functions, progress)
    progress.phase("tracing", sum(1 for _ in model.modules()))
    try:
        graph = tracer.trace(model, dict(defaults) if defaults else None)
    except Exception as error:
        raise TraceFailure(model, error) from error
    finally:
        progress.done()
    _drop_specialized_inputs(graph)
    _drop_unused_variadic_inputs(graph)
    functionalize_inplace(graph, tracer.root)
    collapse_in_place(graph, model, leaf_modules, CALL_SITE)
    follow_training_flag(graph)
    graph_module = fx.GraphModule(safe_root(graph, tracer.root), graph, type(model).__name__)
    tag_nodes(graph_module, module_sites or {}, fallback)
    return Traced(graph_module, "fx", None)


def tag_nodes(
    graph_module: fx.GraphModule, module_sites: dict[str, SourceLocation], fallback: SourceLocation | None
) -> None:
    """Give each node its module path (``MODULE``) and source location (``LOCATION``)."""
    for node in graph_module.graph.nodes:
        module = owning_module(node)
        node.meta[MODULE] = module
        built_at = _nearest_site(module, module_sites)
        node.meta[LOCATION] = with_own_line(node.meta.get(CALL_SITE) or built_at or fallback, built_at, fallback)


def outermost_leaves(model: nn.Module, leaf_modules: Sequence[type[nn.Module]]) -> list[tuple[str, nn.Module]]:
    """The modules tracing would keep whole (standard layers, declared leaves, modules without
    submodules), leaving out those inside another such module; in registration order."""
    tracer = _Tracer(leaf_modules, (), Progress())
    found: list[tuple[str, nn.Module]] = []
    for path, module in model.named_modules():
        if not path or any(path.startswith(f"{outer}.") for outer, _ in found):
            continue
        container = isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict))
        if not container and (tracer.is_leaf_module(module, path) or next(module.children(), None) is None):
            found.append((path, module))
    return found


def _nearest_site(path: str | None, sites: dict[str, SourceLocation]) -> SourceLocation | None:
    while path is not None:
        if path in sites:
            return sites[path]
        path = path.rpartition(".")[0] if path else None
    return None

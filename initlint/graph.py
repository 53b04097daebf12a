"""A networkx view of the probed fx graph: depth, the main path, and each node's roles.

Rules read this view and never run the model. Roles come from the graph's structure:
a *gate* is a sigmoid-like output that feeds a multiply (squeeze-excitation), a *squeeze* is a
pool whose output only reaches the network's output through a gate, *inside_activation*
marks the constant scales and shifts of a transformed activation, a *global pool* leaves no
positions (or drops the token axis, like a ViT's ``x[:, 0]``), a *residual add* sums two
input-dependent tensors, *pool*, *norm*, *activation* and *weighted* come from the op
registry, and *output* marks what the network returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx
import torch
import torch.fx as fx
import torch.nn as nn

from initlint import ops
from initlint.directions import reads_pairs
from initlint.errors import InitlintError
from initlint.kernel import KERNEL, KernelStats
from initlint.locations import SourceLocation
from initlint.moments import ACTIVATIONS, gaussian_moments
from initlint.probe import CARRIES_TENSOR, SOFTMAX, STATS
from initlint.stats import NodeStats, SoftmaxStats
from initlint.trace import LOCATION, MODULE

INPUT, OUTPUT, GATE, RESIDUAL_ADD = "input", "output", "gate", "residual_add"
SQUEEZE, GLOBAL_POOL, NORM, ATTENTION = "squeeze", "global_pool", "norm", "attention"
READS_PAIRS = "reads_pairs"
"""A weighted layer whose columns pair its inputs as (B, -B): a looks-linear init (``initlint
fix`` draws one, ``initlint.looks_linear``) that reads each mirrored pair's difference."""
INSIDE_ACTIVATION = "inside_activation"
"""A value inside a transformed activation ``b * f(a * x + c) + d`` (kernel shaping, initlint
fix's renorm nodes, the ``dks`` package): the constant scales and shifts around ``f`` and ``f``'s
own output, when constants follow it. The transformed activation is one step: only its last
value is its output, and the scales within are no drift."""
_AFFINE_NAMES = frozenset({"mul", "add", "sub", "div", "truediv", "rsub", "renorm"})
_CARRY_SCALE = frozenset({"cat", "concat", "concatenate", "gather", "index_select", "index", "take_along_dim"})
_LINEAR_IN_SCALE = (ops.STRUCTURAL, ops.DROPOUT, ops.WEIGHTED, ops.ADD, ops.MUL, ops.POOL)
"""Families whose output scales with the input's scale (average pools only: max pools too,
but the registry has none)."""
_FAMILY_ROLES = {
    ops.POOL: "pool", ops.NORM: NORM, ops.ACTIVATION: "activation", ops.WEIGHTED: "weighted",
    ops.ATTENTION: ATTENTION,
}
NONLINEAR = frozenset({"activation", ATTENTION})
"""Roles of nonlinear steps: an activation, a softmax, an attention (its softmax is inside)."""


@dataclass
class NodeView:
    name: str
    op: str
    target: str
    module: str | None
    location: SourceLocation | None
    kind: ops.OpKind
    stats: NodeStats | None
    inputs: list[str]
    users: list[str]
    depth: int = 0
    roles: set[str] = field(default_factory=set)
    gaussian_std: float | None = None
    """For an elementwise activation: the std of its output for N(0, 1) inputs (relu: 0.58)."""
    softmax: SoftmaxStats | None = None
    """For a softmax or an attention (or a module call holding one): how far its rows are from uniform."""
    kernel: KernelStats | None = None
    """The output cosine of input pairs at chosen cosines (``initlint.kernel``)."""

    @property
    def op_name(self) -> str:
        """What the node computes, for messages: its kind (linear, relu), else its target (log)."""
        return self.target if self.kind is ops.UNKNOWN else self.kind.name

    @property
    def label(self) -> str:
        """How a person reads this node: what it computes and its module path, quoted
        (``linear `body.2```, ``add `layer1.0```). fx's node names (``body_2``, ``_36``) are for
        JSON only, and a bare ``2`` of an ``nn.Sequential`` would read like a count."""
        return module_label(self.op_name, self.module, self.op == "placeholder")

    @property
    def signal_std(self) -> float | None:
        """The input-dependent std, in units of what a healthy layer of this kind gives:
        an activation's output is compared with its output for N(0, 1) inputs."""
        if self.stats is None:
            return None
        std = self.stats.sample_std if self.stats.sample_std is not None else self.stats.std
        return std / self.gaussian_std if self.gaussian_std else std

    @property
    def signal_grad_std(self) -> float | None:
        """The gradient std in the units of ``signal_std``: a value measured in units of s has
        its gradient in units of 1 / s."""
        if self.stats is None or self.stats.grad_std is None:
            return None
        return self.stats.grad_std * (self.gaussian_std or 1.0)

    @property
    def signal_grad_norm(self) -> float | None:
        """The gradient's norm per sample, in the units of ``signal_std``: ``signal_grad_std``
        times the square root of the elements per sample. A change of resolution conserves it
        where the per-element std jumps: a 2x2 max pool routes each gradient to 1 of its 4
        inputs (per-element std halves, the norm stays), and a conv with fan-in init keeps it
        whatever its stride or widths. The weights' gradients sum over positions, so they
        follow the norm, not the per-element std."""
        grad = self.signal_grad_std
        if grad is None:
            return None
        return grad * math.sqrt(math.prod(self.stats.shape[1:]))

    @property
    def weight(self) -> int:
        """1 for a node that computes something (a layer step), 0 for plumbing."""
        computes = self.op.startswith("call_")
        return int(computes and self.kind.family not in (ops.STRUCTURAL, ops.DROPOUT))


def module_label(what: str, module: str | None, is_input: bool = False) -> str:
    """``what `module```, or ``what`` alone for the model's own top level."""
    if is_input:
        return f"input {what}"
    return f"{what} `{module}`" if module else what


def _target_name(node: fx.Node) -> str:
    if callable(node.target):
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)


def activation_module_of(node: fx.Node, root: fx.GraphModule) -> nn.Module | None:
    """The module an activation node computes: its own, or for a call (``F.relu(x)``,
    ``F.leaky_relu(x, 0.2)``, ``x.tanh()``, an exported ``aten.gelu``) its namesake from
    ``moments.ACTIVATIONS`` built with the call's options, where it computes what the call does."""
    kind = ops.node_kind(node, root)
    if kind.family != ops.ACTIVATION:
        return None
    if node.op == "call_module":
        return root.get_submodule(node.target)
    build = ACTIVATIONS.get(kind.name)
    return None if build is None else _namesake(node, build)


_NAMESAKE_GRID = torch.linspace(-6, 6, 241, dtype=torch.float64)
"""Where a module built from a call's options must agree with the call (both tails and 0)."""


def _namesake(node: fx.Node, build: Callable[..., nn.Module]) -> nn.Module | None:
    """``build`` given the options of ``node``'s call, after its input (``inplace`` aside: the
    module is evaluated on copies), when it then agrees with the call; else None."""
    if node.op not in ("call_function", "call_method") or not node.args:
        return None
    options = {key: value for key, value in node.kwargs.items() if key != "inplace"}
    extra = node.args[1:]
    if any(isinstance(value, fx.Node) for value in (*extra, *options.values())):
        return None  # an option computed from the signal
    call = node.target if node.op == "call_function" else (lambda x, *a, **k: getattr(x, node.target)(*a, **k))
    try:
        module = build(*extra, **options)
        if hasattr(module, "inplace"):  # an ``inplace`` given by position: moments evaluate it on views
            module.inplace = False
        with torch.no_grad():
            agrees = torch.allclose(module(_NAMESAKE_GRID.clone()), call(_NAMESAKE_GRID.clone(), *extra, **node.kwargs))
    except (TypeError, ValueError, RuntimeError):  # options the module does not take, or the call needs others
        return None
    return module if agrees else None


def _gaussian_std(node: fx.Node, root: fx.GraphModule) -> float | None:
    module = activation_module_of(node, root)
    try:
        return gaussian_moments(module).std if module is not None else None
    except InitlintError:  # not elementwise
        return None


def _carries_scale(node: NodeView) -> bool:
    """Whether ``node`` concatenates tensors or gathers elements of one (a ViT's class token
    beside its patches, MAE's random choice of patches): each value it gives is one of its
    inputs', at that input's scale."""
    return node.target.split(".")[0] in _CARRY_SCALE


def _is_global(node: NodeView, source: NodeView) -> bool:
    """No positions left per sample: a pool to 1x1, or fewer dims (``x.mean(1)``, ``x[:, 0]``)."""
    if node.stats is None or source.stats is None:
        return False
    before, after = source.stats.shape, node.stats.shape
    return len(after) < len(before) or all(d == 1 for d in after[2:])


class SignalGraph:
    """Nodes in execution order with their statistics, plus structure the rules need."""

    def __init__(self, graph_module: fx.GraphModule) -> None:
        self.nodes: dict[str, NodeView] = {}
        self.dag = nx.DiGraph()
        for node in graph_module.graph.nodes:
            self.nodes[node.name] = NodeView(
                name=node.name,
                op=node.op,
                target=_target_name(node),
                module=node.meta.get(MODULE),
                location=node.meta.get(LOCATION),
                kind=ops.node_kind(node, graph_module),
                stats=node.meta.get(STATS),
                inputs=[n.name for n in node.all_input_nodes],
                users=[n.name for n in node.users],
                gaussian_std=_gaussian_std(node, graph_module),
                softmax=node.meta.get(SOFTMAX),
                kernel=node.meta.get(KERNEL),
            )
            self.dag.add_node(node.name)
            self.dag.add_edges_from((n.name, node.name) for n in node.all_input_nodes)
        self.inputs = [v.name for v in self.nodes.values() if v.op == "placeholder"]
        self.tensorless = {n.name for n in graph_module.graph.nodes if not n.meta.get(CARRIES_TENSOR, True)}
        """Nodes whose value holds no tensor (sizes, dtypes): they carry no signal."""
        shape_reads = [(n.name, user.name) for n in graph_module.graph.nodes for user in n.users
                       if ops.reads_shape_only(user, n)]
        self.tensor_dataflow = self._tensor_edges(shape_reads)
        self.input_dependent = set(self.inputs).union(*(nx.descendants(self.tensor_dataflow, n) for n in self.inputs))
        self._assign_depths()
        self._assign_roles()
        for node in graph_module.graph.nodes:
            if node.op == "call_module" and reads_pairs(graph_module.get_submodule(node.target)):
                self.nodes[node.name].roles.add(READS_PAIRS)
        self.signal_dag = self._without_gate_edges()
        self._mark_squeezes()
        self._mark_transformed_activations()
        self.main_path = self._main_path()

    def _tensor_edges(self, shape_reads: list[tuple[str, str]]) -> nx.DiGraph:
        """The dataflow along which the input's signal travels: only out of nodes whose value
        holds a tensor, and not into a read of its shape alone. ``x.shape[1]`` depends on the
        input, but a slice of a parameter by that size carries no signal, nor does
        ``x.new_empty(size)`` (generated code draws random numbers like it)."""
        carries = self.dag.copy()
        carries.remove_edges_from([edge for name in self.tensorless for edge in self.dag.out_edges(name)])
        carries.remove_edges_from(shape_reads)
        return carries

    def view(self, name: str) -> NodeView:
        return self.nodes[name]

    def measured(self, names: list[str]) -> list[NodeView]:
        """The views of ``names`` that carry statistics (floating-point tensors)."""
        return [self.nodes[n] for n in names if self.nodes[n].stats is not None]

    def body(self) -> list[NodeView]:
        """The measured main path without the head: it stops before the first global pool, or
        else before the last weighted layer, and before a last normalization layer that no
        activation follows. A classifier's head contracts or expands the signal once (fan-in
        512, fan-out 10), and a pre-LN transformer's final norm closes its residual stream
        (T5 then scales it by d_model**-0.5 for its tied output embedding): no drift with depth."""
        path = self.measured(self.main_path)
        for index, view in enumerate(path):
            if GLOBAL_POOL in view.roles:
                return path[:index]
        weighted = [i for i, view in enumerate(path) if "weighted" in view.roles]
        end = weighted[-1] if len(weighted) > 1 else len(path)
        norms = [i for i, view in enumerate(path[:end]) if NORM in view.roles]
        if norms and not any(view.roles & NONLINEAR for view in path[norms[-1]:end]):
            end = norms[-1]
        return path[:end]

    def scaled_body(self) -> list[NodeView]:
        """The body without the values whose scale does not matter: normalization layers'
        outputs (the norm sets it), values that reach a norm before any nonlinearity (the
        norm cancels it), and the values inside a transformed activation. What IL101 and IL501
        follow."""
        return [v for v in self.body() if NORM not in v.roles and INSIDE_ACTIVATION not in v.roles
                and not self.normalized_before_nonlinearity(v.name)]

    def heads_reading(self, name: str) -> list[NodeView] | None:
        """The layers that give an output of the network (its head) and read ``name`` directly,
        through plumbing and dropout alone; None when a path from ``name`` reaches anything else
        (a pool, too: it keeps a mean that it shrinks the rest of, so the mean is most of what a
        pooled head's logits vary by across classes)."""
        heads, frontier, seen = [], list(self.nodes[name].users), set()
        while frontier:
            user = self.nodes[frontier.pop()]
            if user.name in seen:
                continue
            seen.add(user.name)
            if user.kind.family in (ops.STRUCTURAL, ops.DROPOUT):
                frontier.extend(user.users)
            elif user.kind.family == ops.WEIGHTED and OUTPUT in user.roles:
                heads.append(user)
            else:
                return None
        return heads or None

    def in_residual_branch(self, name: str) -> bool:
        """Whether ``name`` reaches one input of a residual add but not another: it is in the
        branch, not on the stream (a layer before the stream forks reaches both)."""
        reached = nx.descendants(self.dag, name) | {name}
        return any(
            len({source in reached for source in add.inputs if source in self.input_dependent}) == 2
            for add in self.with_role(RESIDUAL_ADD)
        )

    def normalized_before_nonlinearity(self, name: str) -> bool:
        """Whether every path from ``name`` meets a normalization layer before an activation, a
        softmax or attention, or the output, through steps that are linear in it (layers, adds,
        multiplies, average pools, reshapes, concatenations, gathers, dropout): its scale then
        cancels in the norm, as a pre-LayerNorm residual stream's does (and a ViT's patch
        embedding's, beside its class token). Attention is not linear: its scale sharpens the
        softmax inside, which no norm after it undoes. Values that hold no tensor (sizes) read no
        scale; a function that returns several tensors (``chunk``, ``split``) is plumbing, a
        module that does (``nn.MultiheadAttention``, ``nn.LSTM``) is not linear."""
        def linear(user: NodeView) -> bool:
            several = user.stats is None and user.op in ("call_function", "call_method")
            return user.op != "output" and (several or user.kind.family in _LINEAR_IN_SCALE or _carries_scale(user))

        return self._every_path_normalized(name, linear)

    def only_normalized_after(self, name: str) -> bool:
        """Whether every path from ``name`` ends in a normalization layer through plumbing,
        dropout, additions, concatenations and gathers alone, as a pre-norm transformer's token
        embedding does (and a post-norm one's, into its embedding LayerNorm; a ViT's patch
        embedding, beside its class token). A rescale of such a layer changes only its share of the sums and
        concatenations it enters: a token table against the position table added to it,
        the residual stream it starts against the branches (whose budget follows the stream).
        Rescaled to std 1, a Hugging Face token table of std 0.02 made a Llama's stream 27 to
        50 times the original's."""
        return self._every_path_normalized(
            name, lambda user: user.kind.family in (ops.STRUCTURAL, ops.DROPOUT, ops.ADD) or _carries_scale(user))

    def _every_path_normalized(self, name: str, passes: Callable[[NodeView], bool]) -> bool:
        """Whether every path from ``name`` reaches a normalization layer through steps that
        ``passes`` lets through (values that hold no tensor read nothing)."""
        frontier, seen = list(self.nodes[name].users), set()
        if not frontier:
            return False
        while frontier:
            user = self.nodes[frontier.pop()]
            if user.name in seen or NORM in user.roles:
                continue
            seen.add(user.name)
            if user.name in self.tensorless:
                continue
            if not passes(user):
                return False
            frontier.extend(user.users)
        return True

    def trains_unnormalized_weights(self, name: str) -> bool:
        """Whether the gradient at ``name`` reaches a weighted layer (Linear, conv, embedding)
        with no normalization layer between them. A layer whose output a norm reads is
        scale-invariant: the loss ignores its weights' scale, so their gradient is orthogonal to
        them and SGD's effective step, lr * |grad| / |W|^2, corrects itself (a large gradient
        grows |W|; Arora, Li and Lyu, 2019). The drift of a gradient that only such layers see
        (BatchNorm ResNets at init) is no fault."""
        frontier, seen = [name], set()
        while frontier:
            source = self.nodes[frontier.pop()]
            if source.name in seen or source.name not in self.input_dependent or NORM in source.roles:
                continue
            seen.add(source.name)
            if "weighted" in source.roles:
                return True
            frontier.extend(source.inputs)
        return False

    def summarizes(self, pool: NodeView) -> bool:
        """A pool whose output summarizes the sample: it leaves no positions (a global pool into the
        head, or a pooling branch such as ASPP's image pool, broadcast back afterwards), or its
        positions go straight into Linear layers (VGG's adaptive pool before its classifier)."""
        if GLOBAL_POOL in pool.roles:
            return True
        readers = self.through_plumbing(pool.name, "users")
        return bool(readers) and all(reader.kind.name == "linear" for reader in readers)

    def with_role(self, role: str) -> list[NodeView]:
        return [v for v in self.nodes.values() if role in v.roles]

    def through_plumbing(self, name: str, direction: str) -> list[NodeView]:
        """Neighbours of ``name`` ("users" or "inputs"), looking through structural nodes."""
        found, frontier, seen = [], list(getattr(self.nodes[name], direction)), set()
        while frontier:
            other = self.nodes[frontier.pop(0)]
            if other.name in seen:
                continue
            seen.add(other.name)
            if other.kind.family == ops.STRUCTURAL:
                frontier.extend(getattr(other, direction))
            else:
                found.append(other)
        return found

    def _readers(self, name: str) -> list[NodeView]:
        """The users of ``name`` through plumbing and through the renorm node ``fix`` put after
        it: a gate with its mean-1 constant is still a gate."""
        readers = []
        for user in self.through_plumbing(name, "users"):
            readers += self._readers(user.name) if user.kind.name == "renorm" else [user]
        return readers

    def _assign_depths(self) -> None:
        for view in self.nodes.values():  # fx order is topological
            before = [self.nodes[n].depth for n in view.inputs if n in self.input_dependent]
            view.depth = view.weight + max(before, default=0)

    def _assign_roles(self) -> None:
        for view in self.nodes.values():
            if view.kind.family in _FAMILY_ROLES:
                view.roles.add(_FAMILY_ROLES[view.kind.family])
            if view.op == "placeholder" or self._reshapes_an_input(view):
                view.roles.add(INPUT)
            if view.op == "output":
                for source in self.through_plumbing(view.name, "inputs"):
                    source.roles.add(OUTPUT)
            if view.kind.name in ops.GATE_LIKE and any(u.kind.family == ops.MUL for u in self._readers(view.name)):
                view.roles.add(GATE)
            selects_token = view.kind.name in ("getitem", "select")  # a class token, x[:, 0]
            if (view.kind.family == ops.POOL or selects_token) and view.inputs and _is_global(
                view, self.nodes[view.inputs[0]]
            ):
                view.roles.add(GLOBAL_POOL)
            if view.kind.family == ops.ADD and sum(
                n in self.input_dependent and self.nodes[n].stats is not None for n in view.inputs
            ) >= 2:
                view.roles.add(RESIDUAL_ADD)

    def _reshapes_an_input(self, view: NodeView) -> bool:
        """A structural node whose signal comes from inputs alone: wav2vec2's
        ``input_values[:, None]`` is still the input (roles are assigned in execution order)."""
        sources = [n for n in view.inputs if n in self.input_dependent]
        return view.kind.family == ops.STRUCTURAL and bool(sources) and all(
            INPUT in self.nodes[n].roles for n in sources
        )

    def _without_gate_edges(self) -> nx.DiGraph:
        """The input-dependent dataflow in which gates lead nowhere: a gate's branch modulates
        the signal but does not carry it, so it is never part of the main path; nor is a size
        read from a tensor (``x.size(0)``, export's ``sym_size``) that a reshape then takes."""
        signal = self.tensor_dataflow.subgraph(self.input_dependent).copy()
        signal.remove_edges_from([e for g in self.with_role(GATE) for e in self.dag.out_edges(g.name)])
        return signal

    def _reaching_output(self, dag: nx.DiGraph) -> set[str]:
        outputs = [v.name for v in self.nodes.values() if v.op == "output" and v.name in dag]
        return set(outputs).union(*(nx.ancestors(dag, o) for o in outputs))

    def _mark_squeezes(self) -> None:
        carries_signal = self._reaching_output(self.signal_dag)
        for pool in self.with_role("pool"):
            if pool.name in self.input_dependent and pool.name not in carries_signal:
                pool.roles.add(SQUEEZE)

    def _is_constant_affine(self, view: NodeView) -> bool:
        """A scale or shift of one input-dependent value by constants (a renorm node, ``x * 0.37``)."""
        dependent = [n for n in view.inputs if n in self.input_dependent]
        return view.kind.name in _AFFINE_NAMES and len(dependent) == 1 and view.stats is not None

    def _sole_reader(self, view: NodeView) -> NodeView | None:
        readers = self.through_plumbing(view.name, "users")
        return readers[0] if len(readers) == 1 else None

    def _mark_transformed_activations(self) -> None:
        """Mark ``INSIDE_ACTIVATION``: before each activation, the chain of constant affines
        that only it reads; the activation and the affines after it but the last, when
        constant affines alone read it."""
        for activation in self.with_role("activation"):
            sources = [self.nodes[n] for n in activation.inputs if n in self.input_dependent]
            chain = {activation.name}
            while len(sources) == 1 and self._is_constant_affine(sources[0]) and \
                    getattr(self._sole_reader(sources[0]), "name", None) in chain:
                sources[0].roles.add(INSIDE_ACTIVATION)
                chain.add(sources[0].name)
                sources = [self.nodes[n] for n in sources[0].inputs if n in self.input_dependent]
            current, after = activation, self._sole_reader(activation)
            while after is not None and self._is_constant_affine(after):
                current.roles.add(INSIDE_ACTIVATION)
                current, after = after, self._sole_reader(after)

    def _signal_sources(self) -> list[str]:
        """The inputs that carry a sample's signal: floating-point ones, and ids an embedding
        reads. An integer a model only computes with (a diffusion timestep, a length) starts no
        main path; where no input qualifies, every input does."""
        carriers = [
            name for name in self.inputs if self.nodes[name].stats is not None
            or any(user.kind.name == "embedding" for user in self.through_plumbing(name, "users"))
        ]
        return carriers or self.inputs

    def _main_path(self) -> list[str]:
        """The path that carries the signal: from an input to the output through the fewest
        computing nodes, so that it follows skip connections rather than residual branches
        (and never a gate's branch). With several inputs, the deepest of their paths."""
        sub = self.signal_dag.subgraph(self._reaching_output(self.signal_dag)).copy()
        for u, v in sub.edges:
            sub.edges[u, v]["weight"] = self.nodes[v].weight
        outputs = [n for n in sub if self.nodes[n].op == "output"]
        paths = [
            nx.shortest_path(sub, source, outputs[0], weight="weight")
            for source in self._signal_sources() if source in sub and outputs
        ]
        path = max(paths, key=lambda p: sum(self.nodes[n].weight for n in p), default=[])
        return [n for n in path if self.nodes[n].op != "output"]

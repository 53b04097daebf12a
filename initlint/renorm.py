"""The renorm plan: for each site of the probed graph, the constant scale and bias it needs.

Targets come from roles (see DESIGN.md's pitfalls):
- a generic activation, with the default method "dks" -> constants on its input too, which give
  it the slope its depth in the graph allows (``kernel_shaping``), then mean 0 and std 1 (with
  "dks-scale", only where an input scale gives that slope, not a shift);
  with "renorm", where it is not elementwise, or where "dks-scale" would shift it -> std 1, and
  mean 0 where its mean would dominate (``CENTER_ABOVE``) or, with "dks-scale", where only the
  network's output layers read it (``heads_reading``), with the exact constants of
  ``moments`` (quadrature) for an elementwise module, else measured on the probe; its input
  is first shifted to mean 0 where that input's mean exceeds its std (a ReLU an LSUV loop
  killed through its bias);
- a gate (sigmoid into a multiply) -> mean 1, by scale alone, so it stays a non-negative gate;
  at most x4 (``GATE_MAX_SCALE``): a gate pinned closed keeps a small mean rather than become
  a multiplier of thousands once it opens; a gate pinned by its input's mean (beyond its std)
  has that mean removed first;
- a pool in the body -> its measured across-sample shrinkage undone, mean 0 (a pool that
  summarizes the sample for the head is the design: left alone);
- a weighted layer (Linear, ConvNd, Embedding) -> output std 1, by rescaling its weights and
  bias (a data-free LSUV: the probe batch replaces data), with "dks-scale" in looks-linear
  pairs around a ReLU-like activation between two Linear or conv layers (``looks_linear``);
  the last layer of a residual branch gets a share of the stream instead (``RESIDUAL_GROWTH``),
  so the stream grows as planned and not as sqrt(1 + 2L); a branch that is exactly 0
  (zero-initialized on purpose) is left so, and so is a layer whose input is the same for
  every sample (position or token-type ids);
- an activation that only a product reads (a gated linear unit: silu(x W) * (x V)) -> second
  moment 1, by scale alone (``_as_factor``), after its kernel-shaping input constants if any;
- anything right before a normalization layer, or an output of the network -> nothing.

The constants are found in one pass over the graph in execution order, each applied to the
running value before the next site is measured, so every site sees its corrected inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import networkx as nx
import torch
import torch.fx as fx
import torch.nn as nn

from initlint import ops
from initlint.choices import FIX_METHODS
from initlint.directions import Pairing, redrawn, takes_orthogonal_directions
from initlint.errors import InitlintError
from initlint.graph import GATE, OUTPUT, RESIDUAL_ADD, SQUEEZE, NodeView, SignalGraph, activation_module_of
from initlint.inputs import ProbeInputs
from initlint.kernel_shaping import layer_slope, shape
from initlint.looks_linear import LooksLinear, looks_linear_pairs
from initlint.moments import Moments, gaussian_moments, is_elementwise
from initlint.preserve import buffers_preserved
from initlint.probe import FirstStepInterpreter, placeholder_values
from initlint.stats import NodeStats, tensor_stats
from initlint.tied import TiedParameters
from initlint.weight_scale import scale_parameter

GAUSSIAN, GATE_TARGET, NONE = "gaussian", "gate", "none"
MEAN_TOLERANCE = 0.1
STD_TOLERANCE = 0.1
"""A value counts as at its target when its mean is within 0.1 and its std within 10 %."""
CENTER_ABOVE = 1.0
"""An activation is also shifted to mean 0 when its mean exceeds its std (sigmoid: 2.4 stds,
hardsigmoid 3, softplus 1.5). Smaller offsets (relu 0.68 stds, gelu 0.48, silu 0.37) are left:
in benchmarks/train_digits.py centering them cost relu x30 9 points of accuracy under Adam.
The same bound on an activation's or gate's input marks it pinned (``_Planner._recentred``)."""
CHANNEL_MEAN_VALUES = round(MEAN_TOLERANCE ** -2)
"""The values per channel (batch times positions) from which a weighted layer's channel means
are taken as its offsets: 100 give each within MEAN_TOLERANCE of the channel's std. Fewer (a
Linear probed on 2 samples) would write sampling noise into its bias."""
TARGETS = (GAUSSIAN, GATE_TARGET, NONE)
RESIDUAL_GROWTH = 2.0
"""The most the residual stream's std may grow over the body: each of L branches on the main
path adds a variance of GROWTH ** (2 / L) - 1 times the stream's (L = 24: a branch std of 0.24
of the stream's)."""
GATE_MAX_SCALE = 4.0
"""The most a gate's constant multiplies it by: a gate scaled by s multiplies what it gates by
up to s once training opens it, and a gate pinned closed (mean m, bias -b) would need 1/m =
1 + e^b to reach mean 1 (22027 at b = 10), a multiplier that training releases as the gate
opens (SGD on benchmarks/train_digits.py's LSUV-degenerate SE-CNN went NaN). 4 is IL101's band
(``never_worse.OUTPUT_BAND``): a fully opened gate moves its branch no further than the band
allows; a healthy sigmoid gate (mean 1/2) gets its 2, as in NF-Nets."""
DKS, DKS_SCALE, RENORM = METHODS = FIX_METHODS
"""How activations are fixed: kernel shaping (input and output constants); kernel shaping where
an input scale does it (tanh, sigmoid), the renorm constants where it takes an input shift
(ReLU-like); or output constants alone."""


@dataclass
class Renorm:
    """``y -> scale * y + bias`` after node ``node`` (for a weighted layer: its weights scaled)."""

    node: str
    module: str | None
    site: str
    """"activation", "gate", "pool" or "weighted"."""
    target: str
    """What the constants aim for, e.g. "mean 0, std 1"."""
    scale: float
    bias: float
    source: str
    """"quadrature" (exact moments of the activation) or "probe" (measured on the probe batch)."""
    placement: str = "after"
    """"after" the node, or "before" it, on its first input (kernel shaping's input constants)."""
    aim: tuple[float, float] | None = None
    """(mean, std) the constants give, where that is not the site's usual target."""
    measured_mean: float | None = None
    measured_std: float | None = None
    verified: bool | None = None
    """Whether a re-probe of the fixed model met the target (std within 10 %, mean within 0.1)."""
    orthogonal: int | None = None
    """For a weighted layer: the seed of the orthogonal directions its weights take before the
    rescale (``initlint.directions``); None keeps the layer's own."""
    channel_bias: list[float] | None = None
    """For a weighted layer: a shift per output channel, added to its bias after the scale
    (``_Planner._channel_offsets``); None adds ``bias`` to every channel."""
    pairing: Pairing | None = None
    """For a weighted layer whose directions are redrawn: its looks-linear pairs
    (``initlint.looks_linear``); None draws them unpaired."""

    def to_dict(self) -> dict:
        return asdict(self)


def _override(view: NodeView, overrides: Mapping[str | type, str], root: nn.Module) -> str | None:
    """The target that the nearest enclosing module path or class in ``overrides`` sets.
    ``root`` is the user's model: a GraphModule keeps only the modules it calls, and puts blank
    modules on their paths, so the classes of traced-through modules are not in it."""
    path = view.module
    while path is not None:
        if path in overrides:
            return overrides[path]
        module = root.get_submodule(path)
        if type(module) in overrides:
            return overrides[type(module)]
        path = path.rpartition(".")[0] if path else None
    return None


def _feeds_norm(view: NodeView, graph: SignalGraph) -> bool:
    """True when every use goes into a norm, directly or through one linear layer. A use that
    gives no tensor reads the value's metadata, not its signal (timm's ``x.ndim == 4``)."""
    users = [u for u in graph.through_plumbing(view.name, "users") if u.stats is not None]
    return bool(users) and all(
        u.kind.family == ops.NORM
        or (u.kind.family == ops.WEIGHTED and u.users and all(
            w.kind.family == ops.NORM for w in graph.through_plumbing(u.name, "users")))
        for u in users
    )


def site_of(view: NodeView, graph: SignalGraph, target: str | None) -> str | None:
    """Which kind of renorm site ``view`` is, or None when it needs no constants."""
    if view.stats is None or OUTPUT in view.roles or target == NONE:
        return None
    if _feeds_norm(view, graph):
        return None  # the normalization layer sets scale and shift anyway
    if target == GATE_TARGET or GATE in view.roles:
        return "gate"
    if target == GAUSSIAN and view.kind.family != ops.WEIGHTED:
        return "activation"
    if view.kind.family == ops.WEIGHTED and view.op == "call_module":
        return "weighted"
    if view.kind.family == ops.ACTIVATION:
        return "activation"
    if view.kind.family == ops.POOL and SQUEEZE not in view.roles and view.stats.sample_std \
            and not graph.summarizes(view):
        return "pool"
    return None


def _centers(moments: Moments) -> bool:
    return abs(moments.bias) > CENTER_ABOVE


def _reaches_target(constants: Moments, measured: NodeStats) -> bool:
    """Whether ``constants`` bring the measured value to std 1 (and mean 0 if they center)."""
    std_ok = abs(measured.std * constants.scale - 1) <= STD_TOLERANCE
    mean = measured.mean * constants.scale + constants.bias
    return std_ok and (not _centers(constants) or abs(mean) <= MEAN_TOLERANCE)


def _as_factor(make: Callable[[str, float, float, str], Renorm], moments: Moments, source: str) -> Renorm:
    """The constants of an activation that is a factor of a product: second moment 1, by scale
    alone. With the other factor of mean 0 (a Linear's output), the product has mean 0 whatever
    this one's, and variance E[y^2] Var(other) for independent factors; the output constants'
    shift would change neither, and no fold could carry it through the product."""
    rms = math.hypot(moments.mean, moments.std)
    renorm = make("second moment 1: a factor of a product", 1 / rms, 0.0, source)
    renorm.aim = (moments.mean / rms, moments.std / rms)
    return renorm


def _same_for_every_sample(x: object, batch_size: int | None) -> bool:
    """Whether ``x`` holds one value for the whole batch, broadcast over it or repeated bit for
    bit: a learned offset's ids, not the input (a collapsed deep stack comes close, but never
    bit for bit, and its layers are what the fix is for). At std 1, GPT-2's position table
    would be x50 against its tied token table."""
    if not isinstance(x, torch.Tensor) or not batch_size or batch_size < 2 or x.dim() == 0:
        return False
    if x.shape[0] == 1:
        return True
    return x.shape[0] == batch_size and bool((x == x[:1]).all())


class _Planner(FirstStepInterpreter):
    """Runs the graph once (first-training-step semantics), deciding and applying each site's
    constants as it goes."""

    def __init__(self, graph_module: fx.GraphModule, sites: dict[str, str], graph: SignalGraph,
                 batch_size: int | None, method: str, directions_seed: int | None,
                 left_out: frozenset[tuple[str, str]], looks_linear: LooksLinear) -> None:
        super().__init__(graph_module)
        self.left_out = left_out
        """(node, placement) of constants left out of the plan (no exact fold carries them)."""
        self.sites, self.signal, self.batch_size = sites, graph, batch_size
        self.directions_seed = directions_seed
        """The seed of the orthogonal directions weighted layers take; None keeps theirs."""
        self.looks_linear = looks_linear
        """Layers drawn in looks-linear pairs, and the activations those make linear at init. The
        slope budget still counts those activations: given to the others, it would have them
        centred (C(0) = 0), and a centring shift that reaches a zero-padded conv folds inexactly."""
        self.slope = layer_slope(_activation_depth(graph, sites)) if method in (DKS, DKS_SCALE) else None
        """C'(1) each activation is shaped to, with kernel shaping."""
        self.shifts_inputs = method == DKS
        """Whether kernel shaping may shift an activation's input (a ReLU-like one needs that)."""
        self.centres_head_inputs = method == DKS_SCALE
        """Whether an activation that only the network's output layer reads is centred, where
        dks-scale would leave a ReLU-like one at mean ~0.6 std: its mean would reach every
        sample's logits alike, as a correlation (the folded 30-layer ReLU stack: orthogonal
        inputs at cosine 0.46 at the output, 0.11 centred), and the shift folds into the head's
        bias exactly."""
        self.main_path = set(graph.main_path)
        self.by_name = {node.name: node for node in graph_module.graph.nodes}
        branches = sum(RESIDUAL_ADD in graph.view(name).roles for name in graph.main_path)
        self.branch_share = math.sqrt(RESIDUAL_GROWTH ** (2 / branches) - 1) if branches else None
        """A residual branch's output std, as a share of the stream's it is added to."""
        self.plan: list[Renorm] = []
        self.rescaled: dict[str, Renorm] = {}
        """Weighted layers already planned, by module path: a layer called twice is rescaled once."""
        self.tied = TiedParameters(graph_module)

    def observe(self, n: fx.Node, args: tuple, kwargs: dict, result: object) -> object:
        site = self.sites.get(n.name)
        if site is None or not isinstance(result, torch.Tensor):
            return result
        if site == "weighted" and not self._keeps(n.name, "after"):
            return result  # before its directions are redrawn: a layer left out keeps its own
        if site == "weighted" and n.target in self.rescaled:
            earlier = self.rescaled[n.target]  # its weights are already changed: this call sees that too
            redrawn_result = self._with_directions(n, args, kwargs, result, earlier.orthogonal, earlier.pairing)
            return self._rescaled(earlier, redrawn_result)
        orthogonal = self._orthogonal_seed(n) if site == "weighted" else None
        pairing = self.looks_linear.layers.get(n.name)
        as_it_is, result = result, self._with_directions(n, args, kwargs, result, orthogonal, pairing)
        if site == "activation" and self.slope is not None and n.name not in self.looks_linear.activations \
                and self._keeps(n.name, "before"):
            shaped = self._shaped(n, args, kwargs)
            if shaped is not None:
                before, after, result = shaped
                self.plan.append(before)
                return self._applied(after, result)
        if site in ("activation", "gate") and self._keeps(n.name, "before"):
            recentred = self._recentred(n, args, kwargs)
            if recentred is not None:
                before, args, result = recentred
                self.plan.append(before)
        renorm = self._constants(n, site, result, args)
        if site == "weighted":
            self.rescaled[n.target] = renorm
            renorm.orthogonal = orthogonal if not renorm.target.startswith("none") else None
            renorm.pairing = pairing if renorm.orthogonal is not None else None
            if renorm.orthogonal is None:  # a layer left as it is gives what it gave: later sites see that
                result = as_it_is
        return self._applied(renorm, result)

    def _with_directions(self, n: fx.Node, args: tuple, kwargs: dict, result: torch.Tensor, seed: int | None,
                         pairing: Pairing | None) -> torch.Tensor:
        """What weighted node ``n`` gives with the orthogonal directions of ``seed`` (``result``,
        its own, for None)."""
        if seed is None:
            return result
        layer = self.fetch_attr(n.target)
        parameters = redrawn(layer, self.signal.view(n.name).module, seed, pairing)
        return torch.func.functional_call(layer, parameters, args, kwargs)

    def _keeps(self, node: str, placement: str) -> bool:
        return (node, placement) not in self.left_out

    def _maker(self, n: fx.Node, site: str) -> Callable[[str, float, float, str], Renorm]:
        """(target, scale, bias, source) -> the constants after node ``n``, a ``site``."""
        module = self.signal.view(n.name).module
        return lambda target, scale, bias, source: Renorm(
            n.name, module, site, target, float(scale), float(bias), source)

    def _applied(self, after: Renorm, result: torch.Tensor) -> torch.Tensor:
        """``result`` with the constants after a node, unless they are left out."""
        if not self._keeps(after.node, after.placement):
            return result
        self.plan.append(after)
        return self._rescaled(after, result)

    def _rescaled(self, renorm: Renorm, result: torch.Tensor) -> torch.Tensor:
        """``result`` as the node gives it with ``renorm``'s constants."""
        if renorm.channel_bias is None:
            return result * renorm.scale + renorm.bias
        dim = _channel_dim(self.fetch_attr(self.by_name[renorm.node].target))
        return result * renorm.scale + _along(result.new_tensor(renorm.channel_bias), result, dim)

    def _orthogonal_seed(self, n: fx.Node) -> int | None:
        """The seed of the orthogonal directions for weighted node ``n``, or None: directions
        kept by request, an embedding, a zero-initialized layer, or weights tied to another's."""
        layer = self.fetch_attr(n.target)
        if self.directions_seed is None or self.tied.in_module(layer):
            return None
        return self.directions_seed if takes_orthogonal_directions(layer) else None

    def _constants(self, n: fx.Node, site: str, y: torch.Tensor, args: tuple) -> Renorm:
        stats = tensor_stats(y, self.batch_size)
        make = self._maker(n, site)
        if not (math.isfinite(stats.std) and stats.std > 0):
            return make("none: constant or non-finite value", 1.0, 0.0, "probe")
        if site == "weighted":
            if self.tied.in_module(self.fetch_attr(n.target)):
                return make("none: its weights are tied to another layer's, which rescaling would change too",
                            1.0, 0.0, "graph")
            if scale_parameter(self.fetch_attr(n.target)) is None:
                return make("none: its weight is computed on each call (spectral_norm, a parametrization) and no "
                            "parameter scales it", 1.0, 0.0, "graph")
            if _same_for_every_sample(args[0], self.batch_size):
                return make("none: its input is the same for every sample (position or token-type ids): its "
                            "scale against the input's own embedding is the model's design", 1.0, 0.0, "probe")
            stream = self._stream_beside(n)
            if stream is not None:
                share = self.branch_share * stream
                renorm = make(f"std {self.branch_share:.3g} of the residual stream's: the branch's share of "
                              f"{RESIDUAL_GROWTH:g}x growth over the body", share / stats.std, 0.0, "probe")
                renorm.aim = (stats.mean * renorm.scale, share)
                return renorm
            if self.signal.only_normalized_after(n.name):
                return make("none: only normalizations read it, through additions and concatenations: its scale "
                            "against what joins it (position tables, a class token, residual branches) is the "
                            "model's design", 1.0, 0.0, "graph")
            offsets, why = self._channel_offsets(n, y, args), "its input's mean exceeds its std"
            if offsets is None:
                offsets, why = self._mirrored_offsets(n, y), "its bias holds its mirrored units' mean past their std"
            if offsets is not None:
                spread = (y - offsets).std().item()
                renorm = make(f"mean 0 per channel, std 1: {why}", 1 / spread, 0.0, "probe")
                renorm.channel_bias = (-offsets.flatten() / spread).tolist()
                return renorm
            return make("std 1", 1 / stats.std, 0.0, "probe")
        if site == "gate":
            if not stats.mean > 0:
                return make("none: the gate is closed for every probe", 1.0, 0.0, "probe")
            if stats.mean * GATE_MAX_SCALE < 1:
                renorm = make(f"mean {GATE_MAX_SCALE * stats.mean:.3g}: a gate this closed gets at most "
                              f"x{GATE_MAX_SCALE:g} (mean 1 would need x{1 / stats.mean:.4g})",
                              GATE_MAX_SCALE, 0.0, "probe")
                renorm.aim = (GATE_MAX_SCALE * stats.mean, GATE_MAX_SCALE * stats.std)
                return renorm
            return make("mean 1", 1 / stats.mean, 0.0, "probe")
        if site == "pool":
            before = tensor_stats(args[0], self.batch_size).sample_std
            scale = before / stats.sample_std
            return make(f"across-sample std {before:.3g}, mean 0", scale, -scale * stats.mean, "probe")
        module = activation_module_of(n, self.module)
        moments, source = Moments(stats.mean, stats.std), "probe"
        if module is not None and is_elementwise(module):
            exact, how = self._input_moments(module, args[0])
            if _reaches_target(exact, stats):  # else the input is not the Gaussian assumed
                moments, source = exact, how
        if self._feeds_only_products(n):
            return _as_factor(make, moments, source)
        if _centers(moments):
            return make("mean 0, std 1", moments.scale, moments.bias, source)
        if self.centres_head_inputs and self._feeds_only_heads_with_bias(n):
            return make("mean 0, std 1: the head reads it", moments.scale, moments.bias, source)
        return make("std 1", moments.scale, 0.0, source)

    def _feeds_only_heads_with_bias(self, n: fx.Node) -> bool:
        """Whether only output layers with a bias of their own read ``n``
        (``SignalGraph.heads_reading``): its centring shift then folds into their biases
        exactly (a tied head takes no fold)."""
        heads = [self.by_name[head.name] for head in self.signal.heads_reading(n.name) or ()]
        return bool(heads) and all(
            head.op == "call_module" and getattr(layer := self.fetch_attr(head.target), "bias", None) is not None
            and not self.tied.in_module(layer) for head in heads)

    def _channel_offsets(self, n: fx.Node, y: torch.Tensor, args: tuple) -> torch.Tensor | None:
        """The mean of each output channel of weighted node ``n``, shaped to broadcast against
        ``y``, where the layer's input mean exceeds its std (``CENTER_ABOVE``, as for an
        activation), the layer has a bias to cancel them with, and the probe measures them
        (``CHANNEL_MEAN_VALUES``); else None. Such an input (a max pool's: max of 4 N(0, 1) has
        mean 1.03 and std 0.70) gives every channel its own constant, its weights' sum times
        the mean, which nothing later removes and each such layer adds to: torchvision's VGG11,
        fixed without this, kept 0.16 of its input's across-sample std behind its max pools."""
        layer = self.fetch_attr(n.target)
        bias = getattr(layer, "bias", None)
        seen = self._varying_input(args)
        dim = _channel_dim(layer)
        if not isinstance(bias, torch.Tensor) or seen is None or abs(seen.mean) <= CENTER_ABOVE * seen.std or \
                y.dim() < 2 or y.shape[dim] != bias.numel():
            return None
        channels = _by_channel(y, dim)
        if channels.shape[0] < CHANNEL_MEAN_VALUES:
            return None
        return _along(channels.mean(dim=0), y, dim)

    def _mirrored_offsets(self, n: fx.Node, y: torch.Tensor) -> torch.Tensor | None:
        """For a layer whose units come in mirrored pairs (u, -u), where its bias holds u's mean
        past its std (a ReLU it feeds would be dead, ``_recentred``): that mean, taken from u's
        half and given back negated in the other, shaped to broadcast against ``y``; else None.
        Mirrored, the halves' means cancel, so the activation after the layer sees mean 0 and
        no shift there can reach them; rescaled to std 1 over both halves as they were, the
        layer took the offset for signal (a bias of -3 on pre-activations of std 0.58: scaled
        0.33x, its signal at 0.19x of the input's)."""
        pairing = self.looks_linear.layers.get(n.name)
        layer = self.fetch_attr(n.target)
        dim = _channel_dim(layer)
        if pairing is None or not pairing.mirrored or getattr(layer, "bias", None) is None or y.dim() < 2:
            return None
        half = _by_channel(y, dim)[:, : y.shape[dim] // 2]
        mean = half.mean()
        if abs(mean) <= CENTER_ABOVE * half.std():
            return None
        per_half = torch.full((y.shape[dim] // 2,), mean.item())
        return _along(torch.cat([per_half, -per_half]), y, dim)

    def _feeds_only_products(self, n: fx.Node) -> bool:
        """Whether every reader of ``n`` (through plumbing) multiplies it by another varying
        value, as a gated linear unit's activation is (SwiGLU: silu(x W) * (x V))."""
        readers = self.signal.through_plumbing(n.name, "users")
        return bool(readers) and all(
            reader.kind.family == ops.MUL and len(factors := self.by_name[reader.name].args) == 2
            and all(isinstance(f, fx.Node) and f.op != "get_attr" for f in factors)
            for reader in readers)

    def _stream_beside(self, n: fx.Node) -> float | None:
        """The std of the residual stream that ``n``, the last layer of a residual branch, is
        added to, over the square root of the number of branches that one addition brings in
        together (a parallel block's ``x + attention + mlp``: each takes half the variance);
        None when ``n`` is no such layer or the stream is not computed yet. The branch reaches
        the addition through plumbing, dropout and the sums of other branches."""
        if self.branch_share is None or n.name in self.main_path:
            return None
        add = self._stream_addition(n.name)
        if add is None:
            return None
        streams = [self.env.get(node) for node in add.all_input_nodes if node.name in self.main_path]
        if len(streams) != 1 or not isinstance(streams[0], torch.Tensor):
            return None
        branches = sum(self._branch_ends(node.name) for node in add.all_input_nodes if node.name not in self.main_path)
        return streams[0].float().std().item() / math.sqrt(max(branches, 1))

    def _stream_addition(self, name: str) -> fx.Node | None:
        """The residual addition on the main path that ``name`` alone feeds, through plumbing,
        dropout and additions off the main path; None where it feeds anything else."""
        view = self.signal.view(name)
        while True:
            readers = [self.signal.view(r) for r in view.users if r not in self.signal.tensorless]
            if len(readers) != 1:
                return None
            view = readers[0]
            if view.kind.family == ops.ADD and view.name in self.main_path:
                return self.by_name[view.name] if RESIDUAL_ADD in view.roles else None
            if view.kind.family not in (ops.STRUCTURAL, ops.DROPOUT, ops.ADD):
                return None

    def _branch_ends(self, name: str) -> int:
        """How many branch outputs the value ``name`` sums (through plumbing, dropout, additions)."""
        view = self.signal.view(name)
        if view.kind.family not in (ops.STRUCTURAL, ops.DROPOUT, ops.ADD):
            return 1
        return sum(self._branch_ends(source) for source in view.inputs if source in self.signal.input_dependent)

    def _shaped(self, n: fx.Node, args: tuple, kwargs: dict) -> tuple[Renorm, Renorm, torch.Tensor] | None:
        """Kernel shaping's constants before and after an elementwise activation, and its
        output between them; None where it is not elementwise, its input is constant, or the
        shaping needs an input shift that the method does not make. The input constants also
        standardize the input as measured, so the activation sees the N(0, 1) the shaping
        assumes whatever the layer before gives."""
        module = activation_module_of(n, self.module)
        seen = self._varying_input(args) if module is not None and is_elementwise(module) else None
        if seen is None:
            return None
        shaping = shape(module, self.slope)
        if shaping.in_shift and not self.shifts_inputs:
            return None
        scale = shaping.in_scale / seen.std
        centred = shaping.in_shift == 0 and abs(seen.mean) <= MEAN_TOLERANCE * seen.std
        shift = 0.0 if centred else shaping.in_shift - scale * seen.mean
        y = self.of_first_input(n, args, kwargs)(args[0] * scale + shift)
        view = self.signal.view(n.name)
        before = Renorm(n.name, view.module, "activation", f"input N({shaping.in_shift:.3g}, {shaping.in_scale:.3g}^2): "
                        f"slope C'(1) {shaping.slope:.4g}", scale, shift, "quadrature", placement="before",
                        aim=(shaping.in_shift, shaping.in_scale))
        exact = Moments(-shaping.out_shift, 1 / shaping.out_scale)
        stats = tensor_stats(y, self.batch_size)
        reached = abs(stats.std * exact.scale - 1) <= STD_TOLERANCE and \
            abs(stats.mean * exact.scale + exact.bias) <= MEAN_TOLERANCE
        moments, source = (exact, "quadrature") if reached else (Moments(stats.mean, stats.std), "probe")
        make = self._maker(n, "activation")
        if self._feeds_only_products(n):
            return before, _as_factor(make, moments, source), y
        return before, make("mean 0, std 1", moments.scale, moments.bias, source), y

    def _varying_input(self, args: tuple) -> NodeStats | None:
        """The statistics of a node's first input, or None where it is no tensor, constant or
        non-finite: input constants have nothing to standardize there."""
        if not isinstance(args[0], torch.Tensor):
            return None
        seen = tensor_stats(args[0], self.batch_size)
        return seen if math.isfinite(seen.mean) and math.isfinite(seen.std) and seen.std > 0 else None

    def _recentred(self, n: fx.Node, args: tuple, kwargs: dict) -> tuple[Renorm, tuple, torch.Tensor] | None:
        """A shift before an activation or gate whose input's mean exceeds its std (a ReLU
        that fires for under 16 % of inputs, a gate held in a tail), its input and output
        after it; None where the input is centred enough. Scaling alone keeps such a unit
        pinned (an LSUV loop leaves dead ReLUs and closed gates so), and what follows it is
        then measured on almost nothing."""
        seen = self._varying_input(args)
        if seen is None or abs(seen.mean) <= CENTER_ABOVE * seen.std:
            return None
        view = self.signal.view(n.name)
        before = Renorm(n.name, view.module, self.sites[n.name],
                        f"input mean 0: its mean {seen.mean:.3g} exceeds its std {seen.std:.3g}",
                        1.0, -seen.mean, "probe", placement="before", aim=(0.0, seen.std))
        centred = (args[0] - seen.mean, *args[1:])
        return before, centred, self.of_first_input(n, args, kwargs)(centred[0])

    def _input_moments(self, module: nn.Module, x: torch.Tensor) -> tuple[Moments, str]:
        """Exact constants for N(0, 1) inputs when the input is that (within the verification
        tolerances), else for a Gaussian with the input's measured mean and std (after a
        residual add, say)."""
        seen = tensor_stats(x, self.batch_size)
        if abs(seen.mean) <= MEAN_TOLERANCE and abs(seen.std - 1) <= STD_TOLERANCE:
            return gaussian_moments(module), "quadrature"
        loc, spread = float(f"{seen.mean:.4g}"), float(f"{seen.std:.4g}")  # a std of 3e-5 is no 0
        return gaussian_moments(module, loc, spread), f"quadrature, input N({loc:g}, {spread:g}^2)"


def _channel_dim(layer: nn.Module) -> int:
    """Where a weighted layer's output channels are: dim 1 of a conv's (N, C, ...), the last
    of a Linear's (..., C)."""
    return 1 if isinstance(layer, nn.modules.conv._ConvNd) else -1


def _by_channel(y: torch.Tensor, dim: int) -> torch.Tensor:
    """``y``'s values as rows of one value per channel (channels in dim ``dim``)."""
    return y.float().movedim(dim, -1).reshape(-1, y.shape[dim])


def _along(values: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    """``values``, one per channel, shaped to broadcast against ``like`` along its dim ``dim``."""
    shape = [1] * like.dim()
    shape[dim] = values.numel()
    return values.reshape(shape)


def require_method(method: str) -> None:
    if method not in METHODS:
        raise InitlintError(f"unknown fix method {method!r}; use one of {', '.join(METHODS)}.")


def _activation_depth(graph: SignalGraph, sites: dict[str, str]) -> int:
    """The most activation sites on one path from an input to an output: the nonlinearities in
    series whose slopes multiply (through every residual branch, not just the skips). Composed
    as DKS does, a skip dilutes its branch's slope, which would leave a 24-block residual CNN's
    ReLUs unshifted; nearly linear branches are what SGD trains there (README, "Residual
    branches given the slope the composed C map allows": 8 NaN of 10 seeds at slope 1.3)."""
    in_series: dict[str, int] = {}
    for name in nx.topological_sort(graph.signal_dag):
        earlier = max((in_series[p] for p in graph.signal_dag.predecessors(name)), default=0)
        in_series[name] = earlier + (sites.get(name) == "activation")
    return max(in_series.values(), default=0)


def plan_renorm(
    graph_module: fx.GraphModule, graph: SignalGraph, inputs: ProbeInputs, model: nn.Module,
    overrides: Mapping[str | type, str] | None = None, method: str = DKS, directions_seed: int | None = None,
    excluded_sites: frozenset[str] = frozenset(), left_out: frozenset[tuple[str, str]] = frozenset(),
) -> list[Renorm]:
    """The constants of every site of ``graph_module`` (the trace of ``model``), in execution
    order, but for the kinds of site in ``excluded_sites`` ("weighted", "pool", "gate",
    "activation") and the constants in ``left_out`` (node, placement), each measured on what
    the kept ones give; with ``directions_seed``, rescaled Linear and Conv layers take
    orthogonal directions."""
    require_method(method)
    overrides = dict(overrides or {})
    bad = {k: v for k, v in overrides.items() if v not in TARGETS}
    if bad:
        raise InitlintError(f"unknown renorm target(s) {bad}; use one of {', '.join(TARGETS)}.")
    targets = {name: _override(view, overrides, model) for name, view in graph.nodes.items()}
    sites = {
        name: site for name, view in graph.nodes.items()
        if (site := site_of(view, graph, targets[name])) is not None and site not in excluded_sites
    }
    pairs = looks_linear_pairs(graph_module, sites, graph) if method == DKS_SCALE and directions_seed is not None \
        else LooksLinear()
    planner = _Planner(graph_module, sites, graph, inputs.batch_size, method, directions_seed, left_out, pairs)
    with torch.no_grad(), buffers_preserved(graph_module):
        planner.run(*placeholder_values(graph_module, inputs.args, inputs.kwargs))
    return planner.plan

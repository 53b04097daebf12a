"""Dropout and batch norm whose captured graph holds the mode as a literal read the module's
``training`` flag again.

Both captures run ``forward`` once, in training mode, and Python's ``self.training`` is read
then, not recorded: ``F.dropout(x, p, self.training)`` becomes a call with ``True``, and
Hugging Face's attention, ``dropout_p=self.p if self.training else 0.0``, a call with ``p``. A
model built from that graph (``fix``'s output) would drop out in eval mode too, so its
predictions would be random and its outputs would not match the model it came from; a
functional batch norm (timm's ``BatchNormAct2d``) would normalize with batch statistics in
eval mode, and ignore the running ones it keeps updating (one without running statistics,
such as timm's weight standardization, always uses the batch's, and keeps its literal). Each such
literal becomes a read of the graph module's own ``training`` attribute (a ``get_attr``
node), so ``model.eval()`` turns the dropout off again; so does the ``training`` argument of
libraries' stochastic depth (``ops.drop_path_training_at``). Literals that say "off" stay as
they are: a graph captured in eval mode has lost the probability, and a flag left at its
default (``F.dropout(x, 0.1)``) is always on in the user's model as well.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

from initlint.ops import drop_path_training_at

TRAINING = "training"
"""The attribute every ``nn.Module`` has, and the ``get_attr`` target that reads it."""

_ATEN = torch.ops.aten
_TRAIN_FLAG: dict[object, tuple[int, str]] = {
    # where the train flag goes, by position and by name
    **{op: (2, "train") for op in (_ATEN.dropout.default, _ATEN.native_dropout.default,
                                   _ATEN.feature_dropout.default, _ATEN.alpha_dropout.default,
                                   _ATEN.feature_alpha_dropout.default)},
    **{f: (2, "training") for f in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                                    F.feature_alpha_dropout)},
    # batch statistics or running ones (timm's BatchNormAct2d calls it with self.training)
    F.batch_norm: (5, "training"),
    _ATEN.batch_norm.default: (5, "training"),
}
_RUNNING_MEAN: dict[object, tuple[int, str]] = {
    # a batch norm without running statistics normalizes by the batch's in either mode (timm's
    # ScaledStdConv2d standardizes its weight so): its ``training=True`` is no mode
    F.batch_norm: (1, "running_mean"),
    _ATEN.batch_norm.default: (3, "running_mean"),
}
_PROBABILITY: dict[object, tuple[int, str]] = {
    _ATEN.scaled_dot_product_attention.default: (4, "dropout_p"),
    F.scaled_dot_product_attention: (4, "dropout_p"),
}


def _literal(node: fx.Node, position: int, name: str) -> tuple[object, bool]:
    """The argument at ``position`` or ``name``, and whether it was given (else None, False)."""
    if position < len(node.args):
        return node.args[position], True
    return node.kwargs.get(name), name in node.kwargs


def _replace(node: fx.Node, position: int, name: str, value: fx.Node) -> None:
    if position < len(node.args):
        node.update_arg(position, value)
    else:
        node.update_kwarg(name, value)


def _without_running_statistics(node: fx.Node) -> bool:
    return node.target in _RUNNING_MEAN and _literal(node, *_RUNNING_MEAN[node.target])[0] is None


def _read_training(graph: fx.Graph) -> fx.Node:
    # create_node: Graph.get_attr warns about a target that is no Parameter, buffer or module
    return graph.create_node("get_attr", TRAINING)


def follow_training_flag(graph: fx.Graph) -> bool:
    """Rewrite ``graph`` in place; whether any literal now reads ``training`` (its module must
    then have that attribute, which every ``nn.Module`` has)."""
    rewritten = False
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        drop_path_at = drop_path_training_at(node.target)
        flag_at = _TRAIN_FLAG.get(node.target) or ((drop_path_at, "training") if drop_path_at is not None else None)
        if flag_at is not None:
            position, name = flag_at
            flag, given = _literal(node, position, name)
            if given and flag is True and not _without_running_statistics(node):
                with graph.inserting_before(node):
                    _replace(node, position, name, _read_training(graph))
                rewritten = True
        elif node.target in _PROBABILITY:
            position, name = _PROBABILITY[node.target]
            probability, _ = _literal(node, position, name)
            if isinstance(probability, float) and probability > 0:
                with graph.inserting_before(node):
                    # False * p == 0.0, True * p == p
                    in_training = graph.call_function(operator.mul, (_read_training(graph), probability))
                    _replace(node, position, name, in_training)
                rewritten = True
    return rewritten

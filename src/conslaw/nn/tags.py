"""Feature tags: which projection feature each entry of a tensor holds, through reshapes, splits and transposes.

Attention models split heads in many ways (``view``, ``reshape``, ``unflatten``,
``split``, ``chunk``, ``unbind``, ``permute``, ``einsum``, fused ``qkv`` projections,
Hugging Face's ``repeat_kv``). Rather than recognise each spelling, the analysis
runs the graph's *movement* ops themselves on a tag tensor: an integer tensor of
the projection's output shape whose entry [..., f] is f. Whatever the reshapes do,
the tag tensor that reaches the attention scores says, entry by entry, which
projection feature sits there. Ops that scale by a number (``/ sqrt(dh)``, ``neg``)
and identity modules (dropout at p = 0, ``nn.Identity``) leave tags as they are.

Shape arguments computed in the graph (``B, T, E = x.shape`` in torch.fx graphs)
are evaluated from the recorded shapes (:func:`static`).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .trace import Graph

aten = torch.ops.aten


class NotStatic(Exception):
    """A graph value that is not known from the recorded shapes alone."""


#: tensor methods that only move entries (fx ``call_method`` targets, and the export front end's method names)
MOVEMENT_METHODS = {"view", "reshape", "transpose", "permute", "contiguous", "unflatten", "flatten", "split", "chunk",
                    "unbind", "unsqueeze", "squeeze", "expand", "t", "clone", "swapaxes", "movedim", "narrow",
                    "tensor_split", "repeat_interleave", "repeat", "expand_as"}
#: functions that only move entries (torch functions, ``getitem``, and aten ops the export front end keeps)
MOVEMENT_FUNCTIONS = {torch.reshape, torch.transpose, torch.permute, torch.flatten, torch.unflatten, torch.split,
                      torch.chunk, torch.unbind, torch.squeeze, torch.unsqueeze, torch.swapaxes, torch.movedim,
                      torch.cat, torch.concat, torch.stack, torch.narrow, torch.t, torch.repeat_interleave,
                      operator.getitem,
                      aten.split.Tensor, aten.split_with_sizes.default, aten.unbind.int, aten.slice.Tensor,
                      aten.select.int, aten.chunk.default, aten.cat.default, aten.stack.default,
                      aten.squeeze.dims, aten.squeeze.dim, aten.unsqueeze.default, aten.permute.default,
                      aten.transpose.int, aten.view.default, aten.reshape.default, aten._unsafe_view.default,
                      aten.expand.default, aten.clone.default, aten.repeat_interleave.self_int,
                      aten.repeat.default, aten.t.default, aten.narrow.default, aten.unflatten.int,
                      aten.flatten.using_ints, aten.movedim.int, aten.swapaxes.default, aten.unsqueeze_copy.default,
                      aten.contiguous.default}
#: multiplications and divisions (by a number, see :func:`is_scaling`) and negation
SCALING_FUNCTIONS = {operator.mul, operator.truediv, torch.mul, torch.div, operator.neg, torch.neg,
                     aten.neg.default, aten.mul.Scalar, aten.div.Scalar}
SCALING_METHODS = {"mul", "div", "neg", "__mul__", "__truediv__"}
#: casts: the analysis runs in float64, so they change no value (tags stay integers)
CAST_METHODS = {"to", "float", "double", "contiguous"}
IDENTITY_MODULES = (nn.Identity, nn.Dropout)


def is_data(node) -> bool:
    """A node whose value is a tensor or a tuple of tensors (not a size, an int or a dtype)."""
    if not isinstance(node, fx.Node):
        return False
    if node.op in ("placeholder", "get_attr"):
        return True
    if node.meta.get("tensor_meta") is not None:
        return True
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) or (isinstance(val, list | tuple) and
                                             any(isinstance(v, torch.Tensor) for v in val))


def data_args(node: fx.Node) -> list[fx.Node]:
    """The tensor-valued nodes among a node's arguments (lists included), in order, each once."""
    found: list[fx.Node] = []
    fx.map_arg((node.args, node.kwargs), lambda a: found.append(a) if is_data(a) and a not in found else None)
    return found


_ARITH = {operator.add: operator.add, operator.sub: operator.sub, operator.mul: operator.mul,
          operator.floordiv: operator.floordiv, operator.truediv: operator.truediv, operator.pow: operator.pow,
          operator.mod: operator.mod, operator.neg: operator.neg}


def static(graph: Graph, arg):
    """The value of a non-tensor argument: a constant, or a size computed from recorded shapes (fx graphs).

    Raises :class:`NotStatic` when it depends on tensor values.
    """
    if isinstance(arg, list | tuple):
        return type(arg)(static(graph, a) for a in arg)
    if isinstance(arg, dict):
        return {k: static(graph, v) for k, v in arg.items()}
    if isinstance(arg, slice):
        return slice(static(graph, arg.start), static(graph, arg.stop), static(graph, arg.step))
    if not isinstance(arg, fx.Node):
        return arg
    if is_data(arg):
        raise NotStatic(arg.name)
    if arg.op == "call_function":
        if arg.target is getattr and len(arg.args) == 2 and arg.args[1] in ("shape", "ndim"):
            shape = graph.shape(arg.args[0])
            if shape is None:
                raise NotStatic(arg.name)
            return torch.Size(shape) if arg.args[1] == "shape" else len(shape)
        if arg.target is operator.getitem:
            return static(graph, arg.args[0])[static(graph, arg.args[1])]
        if arg.target in _ARITH:
            return _ARITH[arg.target](*static(graph, arg.args))
    if arg.op == "call_method" and arg.target in ("size", "dim") and is_data(arg.args[0]):
        shape = graph.shape(arg.args[0])
        if shape is None:
            raise NotStatic(arg.name)
        if arg.target == "dim":
            return len(shape)
        dims = static(graph, arg.args[1:])
        return shape[dims[0]] if dims else torch.Size(shape)
    val = arg.meta.get("val")
    if isinstance(val, int | float | bool):
        return val
    raise NotStatic(arg.name)


def is_identity(graph: Graph, node: fx.Node) -> bool:
    """An op that leaves tags unchanged: scaling by a number, negation, casts, identity modules, dropout at p = 0."""
    if node.op == "call_module":
        m = graph.module_of(node)
        return isinstance(m, nn.Identity) or (isinstance(m, nn.Dropout) and m.p == 0)
    if node.op == "call_function" and node.target in (F.dropout, aten.dropout.default):
        p = node.kwargs.get("p", node.args[1] if len(node.args) > 1 else 0.5)
        return p == 0
    if node.op == "call_method" and node.target in CAST_METHODS:
        return len(data_args(node)) == 1 and is_data(node.args[0])
    is_scale = (node.op == "call_function" and node.target in SCALING_FUNCTIONS) or \
        (node.op == "call_method" and node.target in SCALING_METHODS)
    if not is_scale:
        return False
    others = [a for a in node.args[1:]]
    return len(data_args(node)) == 1 and is_data(node.args[0]) and all(_is_number(graph, a) for a in others)


def _is_number(graph: Graph, arg) -> bool:
    try:
        return isinstance(static(graph, arg), int | float)
    except NotStatic:
        return False


def is_movement(node: fx.Node) -> bool:
    """An op that only moves, splits, joins or repeats entries."""
    return (node.op == "call_method" and node.target in MOVEMENT_METHODS) or \
        (node.op == "call_function" and node.target in MOVEMENT_FUNCTIONS)


def evaluate(graph: Graph, node: fx.Node, env: dict[fx.Node, object]):
    """Run a movement or identity op on the tag values in ``env`` (its tensor arguments must all be there)."""
    if is_identity(graph, node):
        return env[data_args(node)[0]]

    def value(a):
        if is_data(a):
            return env[a]
        return static(graph, a)

    args = fx.map_arg(node.args, value)
    kwargs = fx.map_arg(node.kwargs, value)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    return node.target(*args, **kwargs)


#: what running an op on tag tensors raises when it is not a static function of them (or a value is missing)
EVALUATION_ERRORS = (NotStatic, RuntimeError, TypeError, IndexError, ValueError, KeyError)


def try_evaluate(graph: Graph, node: fx.Node, env: dict[fx.Node, object]):
    """:func:`evaluate`, or None when the op cannot be run on the tag values (:data:`EVALUATION_ERRORS`)."""
    try:
        return evaluate(graph, node, env)
    except EVALUATION_ERRORS:
        return None


def run_chain(graph: Graph, chain, env: dict[fx.Node, object]) -> bool:
    """Run the nodes of ``chain`` in order on the tag values of ``env`` (results added to it); False at the first
    op that cannot be run, True when all ran."""
    for node in chain:
        value = try_evaluate(graph, node, env)
        if value is None:
            return False
        env[node] = value
    return True


def feature_tags(shape: tuple[int, ...]) -> torch.Tensor:
    """A tag tensor of ``shape``: entry [..., f] = f (features on the last axis)."""
    return torch.arange(shape[-1], dtype=torch.long).expand(*shape).clone()

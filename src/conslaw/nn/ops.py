"""Op tables of the graph analysis: which modules, functions and methods keep a law family intact.

- homogeneous ops (ReLU, pooling, flatten, dropout, means): positively
  homogeneous and unit-wise, so a per-unit rescaling passes through them;
- linear ops (no ReLU, no max): they also commute with mixing the units;
- skip connections (a sum of two tensors).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .trace import Graph

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
#: modules with parameters that the law families know (others get a "no handler" warning)
KNOWN_PARAMETRIC = (nn.Linear, *CONV, *BATCHNORM, nn.LayerNorm, nn.GroupNorm, nn.Embedding)

LINEAR_MODULES = (*DROPOUT, nn.Identity, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                  nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten)
HOMOGENEOUS_MODULES = (*LINEAR_MODULES, nn.ReLU, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
                       nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
LINEAR_FUNCTIONS = {torch.flatten, torch.mean, torch.sum, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
                    F.adaptive_avg_pool2d, F.dropout}
HOMOGENEOUS_FUNCTIONS = LINEAR_FUNCTIONS | {torch.relu, F.relu, F.leaky_relu, F.max_pool1d, F.max_pool2d,
                                            F.adaptive_max_pool2d}
LINEAR_METHODS = {"flatten", "view", "reshape", "mean", "sum", "contiguous"}
HOMOGENEOUS_METHODS = LINEAR_METHODS | {"relu"}



def aten_softmax(x, dim, half_to_float=False):
    """``aten._softmax`` with the signature of the aten op (the torch.export front end writes it)."""
    return torch.softmax(x, dim)


SOFTMAX_FUNCTIONS = {torch.softmax, F.softmax, aten_softmax}


def _is_empty_sequential(m: nn.Module | None) -> bool:
    return isinstance(m, nn.Sequential) and len(m) == 0


def _matches(graph: Graph, node: fx.Node, modules: tuple, functions: set, methods: set) -> bool:
    if node.op == "call_module":
        m = graph.module_of(node)
        return isinstance(m, modules) or _is_empty_sequential(m)
    if node.op == "call_function":
        return node.target in functions
    return node.op == "call_method" and node.target in methods


def is_token_select(graph: Graph, node: fx.Node) -> bool:
    """``x[:, 0]`` (a ViT's class token): indexing by ints and slices that leaves the last (feature) axis whole."""
    if node.op != "call_function" or node.target is not operator.getitem or len(node.args) != 2:
        return False
    source, index = node.args
    shape = graph.shape(source) if isinstance(source, fx.Node) else None
    if shape is None or not isinstance(index, tuple) or not index or len(index) >= len(shape):
        return False
    return all(isinstance(i, int) or (isinstance(i, slice) and i == slice(None)) for i in index) and \
        any(isinstance(i, int) for i in index)


def is_homogeneous(graph: Graph, node: fx.Node) -> bool:
    """A positively homogeneous unit-wise op (ReLU, pooling, flatten, means, dropout, selecting tokens)."""
    return _matches(graph, node, HOMOGENEOUS_MODULES, HOMOGENEOUS_FUNCTIONS, HOMOGENEOUS_METHODS) or \
        is_token_select(graph, node)


def is_add(node: fx.Node) -> bool:
    """A sum of two tensors (a skip connection)."""
    if node.op == "call_function" and node.target in (operator.add, torch.add, operator.iadd):
        return len(node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args)
    return node.op == "call_method" and node.target in ("add", "add_") and \
        len(node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args)


def is_linear_op(graph: Graph, node: fx.Node) -> bool:
    """Homogeneous ops that are also linear (no ReLU, no max): they commute with mixing the units."""
    return is_add(node) or _matches(graph, node, LINEAR_MODULES, LINEAR_FUNCTIONS, LINEAR_METHODS) or \
        is_token_select(graph, node)


def is_softmax(node: fx.Node) -> bool:
    """A softmax call (function or method)."""
    return (node.op == "call_function" and node.target in SOFTMAX_FUNCTIONS) or \
        (node.op == "call_method" and node.target == "softmax")


def is_shape_query(node: fx.Node) -> bool:
    """``x.shape``, ``x.size()``, ``x.dim()``, ``x.dtype``: uses of a tensor that read no value of it."""
    if node.op == "call_function" and node.target is getattr:
        return len(node.args) == 2 and node.args[1] in ("shape", "dtype", "device", "ndim")
    return node.op == "call_method" and node.target in ("size", "dim")


def is_relu(fn) -> bool:
    """ReLU as a function or a module (a TransformerEncoderLayer's activation)."""
    return fn in (F.relu, torch.relu) or isinstance(fn, nn.ReLU)

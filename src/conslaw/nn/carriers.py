"""Carriers and consumers: the per-unit parameters on both sides of a rescaling symmetry.

A *carrier* is a node whose output units each own incoming parameters (Linear
row k and bias k, Conv filter k and bias k, the affine gamma_k, beta_k of a
normalization or the weight of an RMSNorm, a handler leaf's output, an embedding column, a parameter used
directly); a *consumer* is a linear module that reads units through its
columns (Linear, ungrouped Conv, the input projections of attention, the router and experts of a MoE block).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.fx as fx
from torch import nn

from ..laws import Slot, unit_slot
from ..params import ParamSpace
from .attention import MHALayout, incoming_rows
from .moe_layout import is_sparse_moe
from .norms import has_weight, is_layernorm2d, is_rmsnorm, rms_units
from .ops import BATCHNORM, CONV
from .projections import is_conv1d, projection
from .trace import Graph


@dataclass
class Carrier:
    """Per-unit incoming parameters of a node's output; units along ``axis`` (1 or -1).

    ``mixable``: units are arbitrary linear combinations (Linear, Conv, Embedding, a parameter), so that an
    invertible A can mix them; False for the elementwise affine of a normalization (only rescaling commutes).
    """

    module: str
    units: int
    axis: int
    incoming: Callable[[int], list[Slot]]
    cause: str | None = None
    mixable: bool = True


def module_carrier(graph: Graph, node: fx.Node, space: ParamSpace, handler_for) -> Carrier | None:
    """The carrier of a ``call_module`` node (Linear, Conv, affine normalization, handler leaf), if any."""
    if node.op != "call_module":
        return None
    m = graph.module_of(node)
    name = node.target
    handler = handler_for(m)
    if handler is not None:
        return handler.output_carrier(name, m, space)

    def rows(k: int) -> list[Slot]:
        return incoming_rows(space, name, k)

    if isinstance(m, nn.Linear):
        return Carrier(name, m.out_features, -1, rows)
    if is_conv1d(m):  # Hugging Face Conv1D: weight (in, out), feature k = weight[:, k] and bias[k]
        proj = projection(graph, space, node)
        return None if proj is None else Carrier(name, proj.features, -1, lambda k: proj.rows(space, k))
    if isinstance(m, CONV):
        return Carrier(name, m.out_channels, 1, rows)
    if isinstance(m, (*BATCHNORM, nn.GroupNorm)) and m.affine:
        units = m.num_features if isinstance(m, BATCHNORM) else m.num_channels
        return Carrier(name, units, 1, rows, mixable=False)
    if isinstance(m, nn.LayerNorm) and m.elementwise_affine and len(m.normalized_shape) == 1:
        # timm's LayerNorm2d normalizes the channels (axis 1) of an NCHW tensor
        return Carrier(name, m.normalized_shape[0], 1 if is_layernorm2d(m) else -1, rows, mixable=False)
    if is_rmsnorm(m) and has_weight(m):  # g_k scales output unit k (no bias)
        return Carrier(name, rms_units(m), -1, rows, mixable=False)
    if isinstance(m, nn.Embedding):
        weight = f"{name}.weight"
        return Carrier(name, m.embedding_dim, -1, lambda k: [unit_slot(space, weight, 1, k)])
    return None


def parameter_carrier(node: fx.Node, space: ParamSpace) -> Carrier | None:
    """A parameter used directly (e.g. a learned position embedding), units on its last axis."""
    if node.op != "get_attr" or node.target not in space.shapes:
        return None
    shape, name = space.shapes[node.target], node.target
    return Carrier(name, shape[-1], -1, lambda k: [unit_slot(space, name, len(shape) - 1, k)])


def carrier_of(graph: Graph, node: fx.Node, space: ParamSpace, handler_for) -> Carrier | None:
    """The carrier a node's output is, if it is one."""
    return module_carrier(graph, node, space, handler_for) or parameter_carrier(node, space)


def consumer_slots(graph: Graph, node: fx.Node, space: ParamSpace, cols: list[int]) -> list[Slot] | None:
    """Outgoing parameters of a consumer node for input units ``cols`` (None if not a linear consumer)."""
    if node.op != "call_module":
        return None
    m = graph.module_of(node)
    name = node.target
    if isinstance(m, nn.Linear) or (isinstance(m, CONV) and m.groups == 1):
        return [unit_slot(space, f"{name}.weight", 1, 0, cols=cols)]
    if is_conv1d(m):  # weight (in, out): input feature c is row c
        return [unit_slot(space, f"{name}.weight", 0, 0, cols=cols)]
    if is_sparse_moe(m):  # the router and every expert's gate/up projection read input feature c linearly
        return [unit_slot(space, f"{name}.experts.gate_up_proj", 2, 0, cols=cols),
                unit_slot(space, f"{name}.gate.weight", 1, 0, cols=cols)]
    if isinstance(m, nn.MultiheadAttention):
        if node.args[:3] and not (node.args[0] is node.args[1] is node.args[2]):
            return None
        return [unit_slot(space, p, 1, 0, cols=cols) for p in MHALayout.of(name, m).input_weights()]
    return None

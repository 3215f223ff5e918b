"""Projections: modules whose output features each own a row of parameters, and consumers that read columns.

The attention families write laws with the parameters of one projection
*feature* f (the row of its weight, with the bias entry appended: eq. 18 with
biases) and of one consumer *column* c. Two layouts are known:

- ``nn.Linear``: weight (out, in); feature f = ``weight[f, :]``, ``bias[f]``;
  column c = ``weight[:, c]``;
- Hugging Face's ``Conv1D`` (GPT-2's ``c_attn``, ``c_proj``): weight (in, out),
  the transpose; feature f = ``weight[:, f]``, ``bias[f]``; column c = ``weight[c, :]``;
- ``F.linear(x, W, b)`` of parameters read directly (``get_attr``): as ``nn.Linear``.

Parameters are looked up through :meth:`Graph.param_name`, so a tied weight is
named by its canonical (first) name and never by an alias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..laws import Slot, unit_slot
from ..params import ParamSpace
from .trace import Graph


def is_conv1d(m: nn.Module | None) -> bool:
    """Hugging Face's ``Conv1D`` (``transformers.pytorch_utils.Conv1D``): a Linear with weight (in, out)."""
    return m is not None and type(m).__name__ == "Conv1D" and getattr(m, "weight", None) is not None \
        and m.weight.dim() == 2 and hasattr(m, "nf")


@dataclass(frozen=True)
class Projection:
    """A projection node: ``features`` outputs on the last axis; ``rows(f)`` its parameters of feature f."""

    node: fx.Node
    module: str
    features: int
    weight: str
    bias: str | None
    transposed: bool  # Conv1D: weight (in, out)

    def rows(self, space: ParamSpace, f: int) -> list[Slot]:
        """Feature f: the weight's row (column for Conv1D) and the bias entry."""
        slots = [unit_slot(space, self.weight, 1 if self.transposed else 0, f)]
        if self.bias is not None:
            slots.append(unit_slot(space, self.bias, 0, f))
        return slots

    def column(self, space: ParamSpace, c: int) -> Slot:
        """Input column c of the weight (the parameters that read input feature c)."""
        return unit_slot(space, self.weight, 0 if self.transposed else 1, c)


LINEAR_FUNCTIONS = (F.linear, torch.ops.aten.linear.default)


def _functional(space: ParamSpace, node: fx.Node) -> Projection | None:
    """``F.linear(x, W, b)`` with W (and b) parameters read by ``get_attr`` (a tied head, MHA internals)."""
    args = list(node.args) + [node.kwargs.get("weight"), node.kwargs.get("bias")][len(node.args) - 1:]
    weight = args[1] if len(args) > 1 else None
    bias = args[2] if len(args) > 2 else None
    if not (isinstance(weight, fx.Node) and weight.op == "get_attr" and weight.target in space.shapes
            and len(space.shapes[weight.target]) == 2):
        return None
    bias_name = bias.target if isinstance(bias, fx.Node) and bias.op == "get_attr" else None
    if bias is not None and bias_name not in space.shapes:
        return None
    return Projection(node, weight.target.rpartition(".")[0] or weight.target, space.shapes[weight.target][0],
                      weight.target, bias_name, False)


def projection(graph: Graph, space: ParamSpace, node) -> Projection | None:
    """The projection a node calls (trainable ``nn.Linear``, ``Conv1D`` or ``F.linear`` of parameters), else None."""
    if isinstance(node, fx.Node) and node.op == "call_function" and node.target in LINEAR_FUNCTIONS:
        return _functional(space, node)
    if not isinstance(node, fx.Node) or node.op != "call_module":
        return None
    m = graph.module_of(node)
    if isinstance(m, nn.Linear):
        features, transposed = m.out_features, False
    elif is_conv1d(m):
        features, transposed = m.weight.shape[1], True
    else:
        return None
    weight, bias = graph.param_name(node.target, "weight"), graph.param_name(node.target, "bias")
    if weight not in space.shapes:
        return None
    return Projection(node, node.target, features, weight, bias if bias in space.shapes else None, transposed)


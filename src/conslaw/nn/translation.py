"""Family ``translation``: a Linear layer whose outputs may all shift by the same amount without effect.

Softmax + cross-entropy ignores a shift shared by all logits (Prop 3.11), and
a LayerNorm removes the mean of its input: in both cases the column sums of
the Linear weight and the sum of its bias are conserved.
"""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from ..laws import linear_law, unit_slot
from ..params import ParamSpace
from .findings import Findings
from .trace import Graph


def translation_laws(space: ParamSpace, name: str, in_features: int, has_bias: bool, why: str,
                     findings: Findings) -> None:
    """Column sums of ``name``.weight and the sum of its bias, conserved because ``why``."""
    for j in range(in_features):
        findings.laws.append(linear_law(f"{name} column {j} ({why})", [unit_slot(space, f"{name}.weight", 1, j)],
                                        family="translation", module=name, unit=(j,)))
    if has_bias:
        n = space.shapes[f"{name}.bias"][0]
        findings.laws.append(linear_law(f"{name} bias sum ({why})", [unit_slot(space, f"{name}.bias", 0, slice(0, n))],
                                        family="translation", module=name))


def softmax_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """Translation laws of the last Linear before softmax + cross-entropy (Prop 3.11)."""
    outputs = [n for n in graph.nodes if n.op == "output"]
    if not outputs:
        return
    last = outputs[0].args[0]
    if isinstance(last, fx.Node) and last.op == "call_module" and isinstance(graph.module_of(last), nn.Linear):
        m = graph.module_of(last)
        translation_laws(space, last.target, m.in_features, f"{last.target}.bias" in space.shapes,
                         "softmax + cross-entropy", findings)

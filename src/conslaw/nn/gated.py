"""Family ``rescaling (gated unit)``: the up / down projections of a gated MLP (GLU, SwiGLU, GeGLU).

A gated MLP computes down(act(gate(x)) * up(x)) (Shazeer 2020; Llama's SwiGLU, act = SiLU;
GeGLU, act = GELU). The product is linear in up(x), so hidden unit i is 1-homogeneous in
up's row i (and bias i): scaling them by lambda > 0 and down's column i by 1 / lambda leaves
the model unchanged, whatever the activation of the gate, hence per hidden unit (Prop 3.5):

    |up.weight[i, :]|^2 + up.bias[i]^2 - |down.weight[:, i]|^2   (exact).

The gate has no such law unless act is positively homogeneous (ReLU-GLU: then its rows also
rescale against down's columns through the ordinary rescaling family); for SiLU / GELU / tanh
gates nothing is claimed. A plain GELU / SiLU / tanh MLP down(act(up(x))) has no rescaling
law at all: act(lambda z) != lambda act(z).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
from torch import nn

from ..laws import balance_law, unit_slot
from ..params import ParamSpace
from .attention import incoming_rows
from .findings import Findings
from .ops import DROPOUT
from .trace import Graph

FAMILY = "rescaling (gated unit)"
MULS = {operator.mul, torch.mul}


def _is_product(node: fx.Node) -> bool:
    """a * b of two tensors (operator.mul, torch.mul, Tensor.mul, aten.mul.Tensor)."""
    if node.op == "call_function" and (node.target in MULS or str(node.target) == "aten.mul.Tensor"):
        return len(node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args)
    return node.op == "call_method" and node.target == "mul" and len(node.args) == 2 and \
        all(isinstance(a, fx.Node) for a in node.args)


def _linear(graph: Graph, node: fx.Node) -> nn.Linear | None:
    m = graph.module_of(node) if node.op == "call_module" else None
    return m if isinstance(m, nn.Linear) else None


def _consumer(graph: Graph, node: fx.Node) -> fx.Node | None:
    """The single Linear reading ``node`` (through dropout), or None."""
    while len(node.users) == 1:
        node = next(iter(node.users))
        if _linear(graph, node) is not None:
            return node
        if not (node.op == "call_module" and isinstance(graph.module_of(node), DROPOUT)):
            return None
    return None


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen, stack = set(), [node]
    while stack:
        n = stack.pop()
        for a in n.all_input_nodes:
            if a not in seen:
                seen.add(a)
                stack.append(a)
    return seen


def gated_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """One law per hidden unit of every up projection whose output only multiplies a gate read by a Linear."""
    for node in graph.nodes:
        if not _is_product(node):
            continue
        down = _consumer(graph, node)
        if down is None:
            continue
        for up, gate in (node.args, node.args[::-1]):
            m = _linear(graph, up)
            if m is None or len(up.users) != 1 or up in _ancestors(gate) or up is gate:
                continue
            if graph.shape(up) != graph.shape(gate) or _linear(graph, down).in_features != m.out_features:
                continue
            for i in range(m.out_features):
                findings.laws.append(balance_law(
                    f"{up.target}[{i}] * gate -> {down.target}", [unit_slot(space, f"{down.target}.weight", 1, i)],
                    incoming_rows(space, up.target, i), family=FAMILY, module=str(up.target), unit=(i,)))

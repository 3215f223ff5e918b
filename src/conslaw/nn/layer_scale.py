"""Family ``rescaling (layer scale)``: a per-channel scale gamma after a Linear or Conv (CaiT, timm ViTs, ConvNeXt).

y = gamma * (W x + b), gamma a parameter vector over the output units of W (timm's
``LayerScale`` / ``LayerScale2d`` modules, or ConvNeXt's inline ``x.mul(gamma.reshape(1, -1, 1, 1))``
after its MLP). Scaling row k of W and b_k by lambda > 0 and gamma_k by 1 / lambda leaves y
unchanged, hence per unit (Prop 3.5):

    |W[k, :]|^2 + b_k^2 - gamma_k^2   (exact).
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
from .ops import CONV
from .trace import Graph

FAMILY = "rescaling (layer scale)"
#: leaf modules computing x * gamma (gamma: a vector over the channels)
LAYER_SCALE_MODULES = ("LayerScale", "LayerScale2d")
PASS_METHODS = ("permute", "reshape", "view", "contiguous", "transpose")


def _source(graph: Graph, node: fx.Node) -> fx.Node | None:
    """The Linear / Conv a tensor comes from, through axis moves and reshapes, each with a single user."""
    while node.op == "call_method" and node.target in PASS_METHODS and len(node.users) == 1:
        node = node.args[0]
    m = graph.module_of(node) if node.op == "call_module" else None
    return node if isinstance(m, (nn.Linear, *CONV)) and len(node.users) == 1 else None


def _gamma_param(graph: Graph, node: fx.Node, space: ParamSpace) -> str | None:
    """A 1-D parameter, possibly reshaped / viewed for broadcasting."""
    while node.op == "call_method" and node.target in ("reshape", "view", "unsqueeze"):
        node = node.args[0]
    if node.op == "get_attr" and node.target in space.shapes and len(space.shapes[node.target]) == 1:
        return node.target
    return None


def _units(graph: Graph, node: fx.Node) -> int:
    m = graph.module_of(node)
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def layer_scale_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """One law per unit of every Linear / Conv followed by a layer scale (see the module docstring)."""
    for node in graph.nodes:
        pairs = []
        if node.op == "call_module" and type(graph.module_of(node)).__name__ in LAYER_SCALE_MODULES:
            gamma = f"{node.target}.gamma"
            if gamma in space.shapes and isinstance(node.args[0], fx.Node):
                pairs.append((node.args[0], gamma))
        elif (node.op == "call_function" and node.target in (operator.mul, torch.mul)) or \
                (node.op == "call_method" and node.target == "mul"):
            args = [a for a in node.args if isinstance(a, fx.Node)]
            if len(args) == 2:
                for x, g in (args, args[::-1]):
                    gamma = _gamma_param(graph, g, space)
                    if gamma is not None:
                        pairs.append((x, gamma))
        for x, gamma in pairs:
            source = _source(graph, x)
            if source is None or _units(graph, source) != space.shapes[gamma][0]:
                continue
            for k in range(space.shapes[gamma][0]):
                findings.laws.append(balance_law(
                    f"{source.target}[{k}] -> {gamma}[{k}]", [unit_slot(space, gamma, 0, k)],
                    incoming_rows(space, source.target, k), family=FAMILY, module=str(source.target), unit=(k,)))

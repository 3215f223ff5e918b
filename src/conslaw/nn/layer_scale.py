"""Family ``rescaling (layer scale)``: a per-channel scale gamma after a Linear or Conv (CaiT, timm ViTs, ConvNeXt).

y = gamma * (W x + b), gamma a parameter vector over the output units of W (timm's
``LayerScale`` / ``LayerScale2d`` modules, timm ConvNeXt's inline ``x.mul(gamma.reshape(1, -1, 1, 1))``
after its MLP, torchvision ConvNeXt's ``layer_scale * block(x)`` with layer_scale of shape (C, 1, 1) after a
channels-last Linear and a permute). The unit axis is followed through the movement ops by running them on
tags (:mod:`.tags`): gamma[k] must multiply every entry of unit k and nothing else.
Scaling row k of W and b_k by lambda > 0 and gamma_k by 1 / lambda leaves y
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
from .tags import data_args, is_identity, is_movement, run_chain
from .trace import Graph

FAMILY = "rescaling (layer scale)"
#: leaf modules computing x * gamma (gamma: a vector over the channels)
LAYER_SCALE_MODULES = ("LayerScale", "LayerScale2d")


def unit_tags(graph: Graph, node: fx.Node) -> tuple[fx.Node, torch.Tensor] | None:
    """The Linear / Conv a tensor comes from through single-user movement ops (permute, reshape, dropout at p = 0),
    and a tag tensor of the tensor's shape: entry = the source's output unit it holds (:mod:`.tags`)."""
    chain = []
    while not (node.op == "call_module" and isinstance(graph.module_of(node), (nn.Linear, *CONV))):
        if not (is_movement(node) or is_identity(graph, node)) or len(data_args(node)) != 1:
            return None
        chain.append(node)
        node = data_args(node)[0]
        if len(node.users) != 1:
            return None
    shape = graph.shape(node)
    if shape is None or len(node.users) != 1:
        return None
    m = graph.module_of(node)
    if isinstance(m, nn.Linear):
        tags = torch.arange(shape[-1]).expand(*shape)
    else:  # Conv: channels on axis 1
        tags = torch.arange(shape[1]).reshape(1, -1, *[1] * (len(shape) - 2)).expand(*shape)
    env: dict = {node: tags}
    if not run_chain(graph, reversed(chain), env):
        return None
    out = env[chain[0]] if chain else tags
    return (node, out) if isinstance(out, torch.Tensor) else None


def _gamma_tags(graph: Graph, node: fx.Node, space: ParamSpace) -> tuple[str, int, torch.Tensor] | None:
    """A parameter with one non-singleton axis (gamma of shape (C,), (C, 1, 1), ...), possibly reshaped for
    broadcasting: (name, that axis, tag tensor of the node's shape: entry = the gamma index it holds)."""
    chain = []
    while node.op != "get_attr":
        if not is_movement(node) or len(data_args(node)) != 1:
            return None
        chain.append(node)
        node = data_args(node)[0]
    shape = space.shapes.get(node.target)
    axes = [a for a, n in enumerate(shape or ()) if n != 1]
    if len(axes) != 1:
        return None
    env: dict = {node: torch.arange(shape[axes[0]]).reshape(shape)}
    if not run_chain(graph, reversed(chain), env):
        return None
    out = env[chain[0]] if chain else env[node]
    return (str(node.target), axes[0], out) if isinstance(out, torch.Tensor) else None


def _scales_units(units: torch.Tensor, gamma: torch.Tensor) -> bool:
    """gamma, broadcast against the tensor, multiplies every entry of unit k by gamma[k] (and does not expand it)."""
    try:
        return torch.broadcast_shapes(units.shape, gamma.shape) == units.shape and \
            bool(torch.equal(torch.broadcast_to(gamma, units.shape), units))
    except RuntimeError:
        return False


def layer_scale_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """One law per unit of every Linear / Conv followed by a layer scale (see the module docstring)."""
    for node in graph.nodes:
        pairs = []  # (source Linear / Conv node, gamma name, gamma axis)
        if node.op == "call_module" and type(graph.module_of(node)).__name__ in LAYER_SCALE_MODULES:
            gamma = f"{node.target}.gamma"
            found = unit_tags(graph, node.args[0]) if isinstance(node.args[0], fx.Node) else None
            if gamma in space.shapes and found is not None and found[1].dim() >= 1 and \
                    _scales_units(found[1], torch.arange(space.shapes[gamma][0])):
                pairs.append((found[0], gamma, 0))
        elif (node.op == "call_function" and node.target in (operator.mul, torch.mul)) or \
                (node.op == "call_method" and node.target == "mul"):
            args = [a for a in node.args if isinstance(a, fx.Node)]
            if len(args) == 2:
                for x, g in (args, args[::-1]):
                    gamma = _gamma_tags(graph, g, space)
                    found = unit_tags(graph, x) if gamma is not None else None
                    if found is not None and _scales_units(found[1], gamma[2]):
                        pairs.append((found[0], gamma[0], gamma[1]))
        for source, gamma, axis in pairs:
            for k in range(space.shapes[gamma][axis]):
                findings.laws.append(balance_law(
                    f"{source.target}[{k}] -> {gamma}[{k}]", [unit_slot(space, gamma, axis, k)],
                    incoming_rows(space, source.target, k), family=FAMILY, module=str(source.target), unit=(k,)))

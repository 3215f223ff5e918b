"""Tracing: the data-flow picture of an nn.Module, from torch.fx.

Modules with no children are leaves, and so are the modules a handler is
registered for (nn.MultiheadAttention, nn.TransformerEncoderLayer, ...): their
internals are analysed by the handler, not traced (their forward has control
flow that fx cannot trace). Shapes come from running the example input
through the traced graph (fx ShapeProp).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import ConslawError


@dataclass
class Graph:
    """fx graph with module lookup, users and output shapes."""

    module: nn.Module
    gm: fx.GraphModule
    nodes: list[fx.Node] = field(default_factory=list)

    def module_of(self, node: fx.Node) -> nn.Module | None:
        """The module a ``call_module`` node calls (None for other nodes)."""
        return self.gm.get_submodule(node.target) if node.op == "call_module" else None

    @staticmethod
    def shape(node: fx.Node) -> tuple[int, ...] | None:
        """The output shape recorded by shape propagation (None when unknown)."""
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


class LawTracer(fx.Tracer):
    """Leaves: modules without children, and the types in ``leaf_types``."""

    def __init__(self, leaf_types: tuple[type, ...]) -> None:
        super().__init__()
        self.leaf_types = leaf_types

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        """Leaves: modules without children and the registered types."""
        return isinstance(m, self.leaf_types) or not list(m.children())


def trace(model: nn.Module, example_input: torch.Tensor | tuple, leaf_types: tuple[type, ...]) -> Graph:
    """fx-trace ``model`` and propagate shapes of ``example_input``."""
    tracer = LawTracer(leaf_types)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types; say what to do
        raise ConslawError(f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}",
                           "register a handler for the module that has data-dependent control flow "
                           "(conslaw.nn.register_handler) so that it is treated as a leaf") from exc
    gm = fx.GraphModule(tracer.root, graph)
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    except Exception as exc:
        raise ConslawError(f"the example input of shape {[tuple(getattr(i, 'shape', ())) for i in inputs]} "
                           f"does not run through {type(model).__name__}: {type(exc).__name__}: {exc}",
                           "pass an input of the shape the model expects (batch first)") from exc
    return Graph(module=model, gm=gm, nodes=list(gm.graph.nodes))

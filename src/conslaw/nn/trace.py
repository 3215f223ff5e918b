"""Tracing: the data-flow picture of an nn.Module, from torch.fx.

Modules with no children are leaves, and so are the modules a handler is
registered for (nn.MultiheadAttention, nn.TransformerEncoderLayer, ...): their
internals are analysed by the handler, not traced (their forward has control
flow that fx cannot trace). Shapes come from running the example input
through the traced graph (fx ShapeProp).

Models that torch.fx cannot trace (Hugging Face transformers: iteration over
proxies, control flow on traced values) go through the torch.export front
end, :func:`conslaw.nn.export.export_graph`, which builds a :class:`Graph` of
the same form; :attr:`Graph.front_end` says which one made it.

Tied parameters: ``named_parameters()`` lists a tied tensor once, under its
first name (GPT-2: ``transformer.wte.weight``; ``lm_head.weight`` is an alias of
it). :func:`parameter_aliases` maps every name to the canonical one, and
:meth:`Graph.param_name` gives the canonical name of a module's ``weight`` or
``bias``: law families must look parameters up through it, never as
``f"{module}.weight"`` in the parameter space directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import ConslawError


def parameter_aliases(module: nn.Module) -> dict[str, str]:
    """Every parameter name of ``module``, tied aliases included, -> its canonical name in ``named_parameters()``.

    >>> lin = nn.Linear(2, 2); model = nn.ModuleDict({"a": lin, "b": lin})
    >>> parameter_aliases(model)["b.weight"]
    'a.weight'
    """
    canonical = {id(p): name for name, p in module.named_parameters()}
    return {name: canonical[id(p)] for name, p in module.named_parameters(remove_duplicate=False)}


@dataclass
class Graph:
    """fx graph with module lookup, users and output shapes.

    ``aliases``: every parameter name (tied aliases included) -> canonical name (:func:`parameter_aliases`);
    ``front_end``: ``torch.fx`` or ``torch.export`` (:mod:`conslaw.nn.export`); ``notes``: what the front end did.
    """

    module: nn.Module
    gm: fx.GraphModule
    nodes: list[fx.Node] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    front_end: str = "torch.fx"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.aliases:
            self.aliases = parameter_aliases(self.module)

    def param_name(self, module: str, attr: str = "weight") -> str | None:
        """The canonical parameter name of ``{module}.{attr}`` (a tied alias maps to its owner); None if absent.

        Args:
            module: a module's qualified name, e.g. ``lm_head``.
            attr: the parameter's attribute, e.g. ``weight`` or ``bias``.
        """
        return self.aliases.get(f"{module}.{attr}" if module else attr)

    def tied(self) -> dict[str, str]:
        """The aliases of tied parameters only: alias -> canonical name."""
        return {a: c for a, c in self.aliases.items() if a != c}

    def module_of(self, node: fx.Node) -> nn.Module | None:
        """The module a ``call_module`` node calls (None for other nodes)."""
        return self.gm.get_submodule(node.target) if node.op == "call_module" else None

    @staticmethod
    def shape(node: fx.Node) -> tuple[int, ...] | None:
        """The output shape recorded by shape propagation (None when unknown)."""
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


#: parameter-free modules traced through rather than kept as leaves, so that their ops (torch.permute) are seen by
#: the families that follow axes: torchvision.ops.misc.Permute (ConvNeXt's channels-last blocks)
TRACED_THROUGH = ("Permute",)


class LawTracer(fx.Tracer):
    """Leaves: modules without children, and the types in ``leaf_types``; never a module in ``tied``.

    A module holding a tied parameter (``head.weight`` is ``embed.weight``: both ``head`` and ``embed``)
    is traced through, so that the parameter appears as ``get_attr`` nodes of the canonical name: no
    family looks up the alias, and none treats one use of a shared tensor as if it were the only one.
    """

    def __init__(self, leaf_types: tuple[type, ...], tied: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.leaf_types = leaf_types
        self.tied = tied

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        """Leaves: modules without children and the registered types, except modules with a tied parameter."""
        if qualname in self.tied or type(m).__name__ in TRACED_THROUGH:
            return False
        return isinstance(m, self.leaf_types) or not list(m.children())


def _placeholder_values(gm: fx.GraphModule, example_input) -> list:
    """Values of the graph's placeholders: positional inputs in order, a dict's entries by name, else defaults."""
    if isinstance(example_input, Mapping):
        values = []
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                values.append(example_input[node.target] if node.target in example_input
                              else (node.args[0] if node.args else None))
        return values
    return list(example_input) if isinstance(example_input, tuple | list) else [example_input]


def trace(model: nn.Module, example_input: torch.Tensor | tuple | Mapping, leaf_types: tuple[type, ...]) -> Graph:
    """fx-trace ``model`` and propagate shapes of ``example_input`` (a tensor, a tuple, or a dict by name)."""
    aliases = parameter_aliases(model)
    tied = frozenset(name.rpartition(".")[0] for alias, canonical in aliases.items() if alias != canonical
                     for name in (alias, canonical))
    tracer = LawTracer(leaf_types, tied)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types; say what to do
        raise ConslawError(f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}",
                           "register a handler for the module that has data-dependent control flow "
                           "(conslaw.nn.register_handler) so that it is treated as a leaf") from exc
    for node in graph.nodes:  # a tied parameter is read under its canonical name
        if node.op == "get_attr" and node.target in aliases:
            node.target = aliases[node.target]
    gm = fx.GraphModule(tracer.root, graph)
    inputs = _placeholder_values(gm, example_input)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    except Exception as exc:
        raise ConslawError(f"the example input of shape {[tuple(getattr(i, 'shape', ())) for i in inputs]} "
                           f"does not run through {type(model).__name__}: {type(exc).__name__}: {exc}",
                           "pass an input of the shape the model expects (batch first)") from exc
    notes = [f"tied parameters (one parameter, its canonical name): {a} = {c}" for a, c in aliases.items() if a != c]
    return Graph(module=model, gm=gm, nodes=list(gm.graph.nodes), aliases=aliases, notes=notes)

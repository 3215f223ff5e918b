"""Embedding lookups at fixed indices (position tables) and the rows they never read.

A position table is an ``nn.Embedding`` looked up with indices that do not depend on the
input's values, only on its shape: Hugging Face GPT-2 reads ``wpe(arange(T))``. Every field the
engine and the verification use is a loss gradient on inputs of the example's shape (same T), so
the rows R = {indices read} are the same for every field, and a row p not in R receives no
gradient:

    d L / d P[p, j] = 0  for every batch  =>  h = P[p, j] is conserved  (exact; Prop 2.3 with grad h = e_{p,j})

(``zero-gradient (unread rows)``: GPT-2 with n_positions = 8 trained on length-5 sequences
conserves the 3 x 8 entries of wpe[5:8]). The same set R is what the summed-embedding shift
sum_t E[t, d] - sum_{p in R} P[p, d] (:mod:`.embeddings`) moves.

:func:`fixed_rows` finds R from the graph: the index's ancestors may read an input only through
shape queries (``x.size(1)``, ``x.shape``), and no parameter or module; the index is then
evaluated with the inputs replaced by zeros of their recorded shapes. No paper equation: a
parameter the loss does not read is the trivial case of Prop 2.3.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from ..laws import coordinate_law
from ..params import ParamSpace
from .findings import Findings
from .ops import is_shape_query
from .trace import Graph

UNREAD = "zero-gradient (unread rows)"


def _constant_subgraph(graph: Graph, node: fx.Node, space: ParamSpace) -> tuple[list[fx.Node], list[fx.Node]] | None:
    """(nodes to evaluate in graph order, nodes read only through a shape query), or None when ``node`` depends
    on an input's values, a parameter or a module call."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    needed: set[fx.Node] = set()
    shaped: set[fx.Node] = set()
    todo = [node]
    while todo:
        n = todo.pop()
        if n in needed:
            continue
        needed.add(n)
        if is_shape_query(n):
            src = n.args[0]
            if not isinstance(src, fx.Node) or graph.shape(src) is None:
                return None
            shaped.add(src)
            continue
        if n.op in ("placeholder", "call_module", "output") or (n.op == "get_attr" and n.target in space.shapes):
            return None
        todo.extend(n.all_input_nodes)
    return sorted(needed, key=order.__getitem__), sorted(shaped, key=order.__getitem__)


def fixed_rows(graph: Graph, node: fx.Node, space: ParamSpace) -> torch.Tensor | None:
    """The sorted distinct rows an ``nn.Embedding`` call reads when its indices depend on the input's shape only.

    Returns None when ``node`` is not an embedding call or its indices depend on the input's values.
    """
    module = graph.module_of(node)
    if not isinstance(module, nn.Embedding) or len(node.args) != 1 or not isinstance(node.args[0], fx.Node):
        return None
    sub = _constant_subgraph(graph, node.args[0], space)
    if sub is None:
        return None
    nodes, shaped = sub
    interpreter = fx.Interpreter(graph.gm)
    for n in shaped:
        meta = n.meta["tensor_meta"]
        interpreter.env[n] = torch.zeros(meta.shape, dtype=meta.dtype)
    try:
        with torch.no_grad():
            for n in nodes:
                if n not in interpreter.env:
                    interpreter.env[n] = interpreter.run_node(n)
    except Exception:  # an op that cannot run on its own (a get_attr the export front end dropped, ...)
        return None
    index = interpreter.env[node.args[0]]
    if not isinstance(index, torch.Tensor) or index.dtype.is_floating_point or index.is_complex():
        return None
    return torch.unique(index.reshape(-1))


def lookups_of(graph: Graph, weight: str) -> tuple[list[fx.Node], list[fx.Node]]:
    """(embedding calls reading parameter ``weight``, every other node that reads it) by canonical name."""
    calls, others = [], []
    for node in graph.nodes:
        if node.op == "get_attr" and node.target == weight:
            others.append(node)
        elif node.op == "call_module" and graph.param_name(str(node.target)) == weight:
            (calls if isinstance(graph.module_of(node), nn.Embedding) else others).append(node)
    return calls, others


def unread_row_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """Every entry of every row no fixed lookup reads, for tables read only by fixed lookups (module docstring)."""
    seen: set[str] = set()
    for node in graph.nodes:
        module = graph.module_of(node)
        if not isinstance(module, nn.Embedding):
            continue
        weight = graph.param_name(str(node.target))
        if weight is None or weight in seen or weight not in space.shapes:
            continue
        seen.add(weight)
        calls, others = lookups_of(graph, weight)
        rows = [fixed_rows(graph, call, space) for call in calls]
        if others or any(r is None for r in rows):
            continue
        read = torch.unique(torch.cat(rows))
        count, dim = space.shapes[weight]
        unread = sorted(set(range(count)) - set(read.tolist()))
        for p in unread:
            for j in range(dim):
                findings.laws.append(coordinate_law(space, weight, p * dim + j, f"row {p} is never read",
                                                    family=UNREAD, module=str(node.target), unit=(p, j)))
        if unread:
            findings.notes.append(f"{node.target} reads rows {read.tolist()} of {count} for every input of the "
                                  f"example's shape: rows {unread} get no gradient")

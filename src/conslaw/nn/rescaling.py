"""Family ``rescaling``: per unit, |outgoing|^2 - |incoming|^2 over a whole *stream* (Prop 3.5, Thm 3.6, eq. 17).

A stream is a connected set of positively homogeneous unit-wise operations
(ReLU, pooling, flatten, means) and additions (skip connections), fed only by
carriers and read only by linear consumers. Scaling unit k of every carrier by
lambda > 0 and of every consumer by 1/lambda leaves the model unchanged, hence
one law per unit. With a single carrier and consumer this is the law of a
neuron (Prop 3.5, Thm 3.6); with skip connections it spans every block that
writes to or reads from the residual stream (a law no pair of layers has
alone, Thm 4.7). A branch into any other operation breaks it, and no law is reported.

A *linear* stream (no ReLU or max inside, mixable carriers) is invariant under
every invertible A acting on its units: all entries of
sum_out Out^T Out - sum_in In In^T are conserved (family ``mixing (linear stream)``).
"""

from __future__ import annotations

import math

import torch.fx as fx

from ..laws import balance_law, gram_law
from ..params import ParamSpace
from .carriers import Carrier, carrier_of, consumer_slots
from .findings import Findings
from .ops import CONV, is_add, is_homogeneous, is_linear_op, is_shape_query
from .trace import Graph


def propagate(layout, shape_in, shape_out, units):
    """Layout of the units after a homogeneous op, from the shapes: same axis, or flattened blocks."""
    if shape_in is None or shape_out is None:
        return None
    kind, value = layout
    if kind == "block":
        return layout if tuple(shape_in) == tuple(shape_out) else None
    if value == -1:
        return layout if shape_out and shape_out[-1] == units else None
    if len(shape_out) >= 2 and shape_out[1] == units:
        return layout
    if len(shape_out) == 2 and len(shape_in) > 2 and shape_out[1] == units * math.prod(shape_in[2:]):
        return ("block", math.prod(shape_in[2:]))
    return None


def columns(layout, shape, consumer):
    """Input columns (Linear), input channels (Conv) or input features (attention) of unit k."""
    kind, value = layout
    if shape is None:
        return None
    if isinstance(consumer, CONV):
        return (lambda k: [k]) if layout == ("axis", 1) and len(shape) > 2 else None
    if kind == "block":
        return lambda k: list(range(k * value, (k + 1) * value))
    if value == -1 or (value == 1 and len(shape) == 2):
        return lambda k: [k]
    return None


def streams(graph: Graph, carriers: dict[fx.Node, Carrier], internal: set) -> list[list]:
    """Connected groups of (kind, node): ``out`` carriers, ``int`` inner ops, ``in`` consumers (union-find)."""
    parent: dict = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for node in graph.nodes:
        if node in internal or node in carriers:
            src = ("out", node) if node in carriers and node not in internal else ("int", node)
            find(src)
            for user in node.users:
                if is_shape_query(user):
                    continue
                parent[find(src)] = find(("int", user) if user in internal else ("in", user))
    groups: dict = {}
    for key in list(parent):
        groups.setdefault(find(key), []).append(key)
    return list(groups.values())


def rescaling_laws(graph: Graph, space: ParamSpace, findings: Findings, handler_for) -> None:
    """One law per unit of every stream (see the module docstring)."""
    carriers = {}
    for node in graph.nodes:
        c = carrier_of(graph, node, space, handler_for)
        if c is not None:
            carriers[node] = c
    internal = {n for n in graph.nodes if is_homogeneous(graph, n) or is_add(n)}
    for members in streams(graph, carriers, internal):
        stream_laws(graph, space, carriers, members, findings)


def _layouts(graph: Graph, carriers, sources, inner, stream_nodes, units) -> dict | None:
    """Unit layout at every inner node, propagated from the sources; None when a node breaks the stream."""
    for n in inner:
        tensor_args = [a for a in n.args if isinstance(a, fx.Node)]
        if is_add(n):
            if not all(a in stream_nodes for a in tensor_args):
                return None
        elif not tensor_args or tensor_args[0] not in stream_nodes:
            return None
    layout = {n: ("axis", carriers[n].axis) for n in sources}
    inner_set = set(inner)
    for n in (n for n in graph.nodes if n in inner_set):
        ins = [a for a in n.args if isinstance(a, fx.Node) and a in stream_nodes]
        if is_add(n):
            shapes = {graph.shape(a) for a in ins}
            if len(shapes) != 1 or graph.shape(n) not in shapes:
                return None
            got = {layout.get(a) for a in ins}
        else:
            got = {propagate(layout[a], graph.shape(a), graph.shape(n), units) if a in layout else None for a in ins}
        if len(got) != 1 or None in got:
            return None
        layout[n] = got.pop()
    return layout


def stream_laws(graph: Graph, space: ParamSpace, carriers: dict, members: list, findings: Findings) -> None:
    """The per-unit laws of one stream, and its mixing laws when it is linear."""
    sources = [n for kind, n in members if kind == "out"]
    sinks = [n for kind, n in members if kind == "in"]
    inner = [n for kind, n in members if kind == "int"]
    if not sources or not sinks:
        return
    units = {carriers[n].units for n in sources}
    if len(units) != 1:
        return
    units = units.pop()
    stream_nodes = set(sources) | set(inner)
    layout = _layouts(graph, carriers, sources, inner, stream_nodes, units)
    if layout is None:
        return
    terminals = []
    for sink in sinks:
        if not sink.args or sink.args[0] not in stream_nodes or consumer_slots(graph, sink, space, [0]) is None:
            return
        cols = columns(layout[sink.args[0]], graph.shape(sink.args[0]), graph.module_of(sink))
        if cols is None:
            return
        terminals.append((sink, cols))

    def outgoing(k: int):
        return [s for t, cols in terminals for s in consumer_slots(graph, t, space, cols(k))]

    def incoming(k: int):
        return [s for n in sources for s in carriers[n].incoming(k)]

    in_names = ", ".join(dict.fromkeys(carriers[n].module for n in sources))
    out_names = ", ".join(dict.fromkeys(t.target for t, _ in terminals))
    module = carriers[sources[0]].module
    family = "rescaling (residual stream)" if any(is_add(n) for n in inner) else "rescaling"
    for k in range(units):
        findings.laws.append(balance_law(f"unit {k}: {in_names} -> {out_names}", outgoing(k), incoming(k),
                                         family=family, module=module, unit=(k,),
                                         approximate_cause=carriers[sources[0]].cause))
    if all(is_linear_op(graph, n) for n in inner) and all(carriers[n].mixable for n in sources):
        for a in range(units):
            for b in range(a + 1, units):
                findings.laws.append(gram_law(f"units ({a},{b}): {in_names} -> {out_names}", outgoing(a),
                                              outgoing(b), incoming(a), incoming(b),
                                              family="mixing (linear stream)", module=module, unit=(a, b)))

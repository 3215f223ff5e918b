"""Pattern handlers: from the data-flow graph to law families.

Families (each with biases handled):

- ``rescaling``: a *carrier* of per-unit incoming parameters (Linear row k and
  bias k, Conv filter k and bias k, or the affine gamma_k, beta_k of a
  BatchNorm/LayerNorm/GroupNorm) whose output reaches linear consumers only
  through positively homogeneous unit-wise operations (ReLU, LeakyReLU,
  pooling, dropout, flatten, means over other axes). Scaling unit k by
  lambda > 0 on the incoming side and by 1/lambda on the outgoing side leaves
  the function unchanged, so |outgoing_k|^2 - |incoming_k|^2 is conserved
  (Prop 3.5, Thm 3.6, eq. 17). A branch into a skip connection or any other
  operation breaks it (Thm 4.7), and no law is reported.
- ``scale-invariance``: weights (and bias) feeding a normalization layer
  that uses batch statistics are scale invariant up to its eps: the norm of
  each normalized unit is conserved *approximately*; a bias whose effect the
  normalization removes has zero gradient (each entry is conserved).
- ``translation``: a Linear layer whose outputs are all shifted by the same
  amount without effect (softmax + cross-entropy, Prop 3.11; LayerNorm):
  column sums and the bias sum are conserved.
- ``attention``: per head of nn.MultiheadAttention, Q_h Q_h^T - K_h K_h^T and
  V_h V_h^T - O_h^T O_h with biases appended (Cor 3.9, 3.10); the key bias
  has zero gradient (softmax ignores a shift shared by all keys).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..params import ParamSpace
from .graph import Graph
from .laws_nn import Findings, Slot, balance_law, gram_law, linear_law, unit_slot, zero_gradient_law

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
HOMOGENEOUS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity,
                       nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                       nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                       nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Flatten)
HOMOGENEOUS_FUNCTIONS = {torch.relu, F.relu, F.leaky_relu, torch.flatten, F.dropout, F.max_pool1d, F.max_pool2d,
                         F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, torch.mean,
                         torch.sum, F.adaptive_max_pool2d}
HOMOGENEOUS_METHODS = {"relu", "flatten", "view", "reshape", "mean", "sum", "contiguous"}


@dataclass
class Carrier:
    """Per-unit incoming parameters of a node's output; units along ``axis`` (1 or -1)."""

    module: str
    units: int
    axis: int
    incoming: callable  # k -> list[Slot]
    cause: str | None = None
    #: units are arbitrary linear combinations (Linear, Conv, Embedding, a parameter), so that an invertible
    #: A can mix them; False for the elementwise affine of a normalization (only rescaling commutes with it)
    mixable: bool = True


def carrier_of(graph: Graph, node: fx.Node, space: ParamSpace) -> Carrier | None:
    """The carrier a node's output has, if it is one (Linear, Conv, affine normalization, handler leaf)."""
    if node.op != "call_module":
        return None
    m = graph.module_of(node)
    name = node.target
    from .registry import handler_for

    handler = handler_for(m)
    if handler is not None:
        return handler.output_carrier(name, m, space)
    if isinstance(m, (nn.Linear, *CONV)):
        axis = -1 if isinstance(m, nn.Linear) else 1
        units = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        return Carrier(name, units, axis, lambda k: incoming_slots(space, name, k))
    if isinstance(m, (*BATCHNORM, nn.GroupNorm)) and m.affine:
        units = m.num_features if isinstance(m, BATCHNORM) else m.num_channels
        return Carrier(name, units, 1, lambda k: incoming_slots(space, name, k), mixable=False)
    if isinstance(m, nn.LayerNorm) and m.elementwise_affine and len(m.normalized_shape) == 1:
        return Carrier(name, m.normalized_shape[0], -1, lambda k: incoming_slots(space, name, k), mixable=False)
    return None


def incoming_slots(space: ParamSpace, module: str, k: int) -> list[Slot]:
    """Unit k of a weight (row / output channel / gamma entry) and of its bias, when present."""
    slots = []
    for suffix in ("weight", "bias"):
        pname = f"{module}.{suffix}"
        if pname in space.shapes:
            slots.append(unit_slot(space, pname, 0, k))
    return slots


def consumer_slots(graph: Graph, node: fx.Node, space: ParamSpace, cols: list[int]) -> list[Slot] | None:
    """Outgoing parameters of a consumer node for input units ``cols`` (None if not a linear consumer)."""
    if node.op != "call_module":
        return None
    m = graph.module_of(node)
    name = node.target
    if isinstance(m, nn.Linear):
        return [unit_slot(space, f"{name}.weight", 1, 0, cols=cols)]
    if isinstance(m, CONV) and m.groups == 1:
        return [unit_slot(space, f"{name}.weight", 1, 0, cols=cols)]
    if isinstance(m, nn.MultiheadAttention):
        if node.args[:3] and not (node.args[0] is node.args[1] is node.args[2]):
            return None
        names = ["in_proj_weight"] if m._qkv_same_embed_dim else ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
        return [unit_slot(space, f"{name}.{p}", 1, 0, cols=cols) for p in names]
    return None


def is_homogeneous(graph: Graph, node: fx.Node) -> bool:
    if node.op == "call_module":
        m = graph.module_of(node)
        return isinstance(m, HOMOGENEOUS_MODULES) or (isinstance(m, nn.Sequential) and len(m) == 0)
    if node.op == "call_function":
        return node.target in HOMOGENEOUS_FUNCTIONS
    if node.op == "call_method":
        return node.target in HOMOGENEOUS_METHODS
    return False


def _prod(sizes) -> int:
    out = 1
    for s in sizes:
        out *= s
    return out


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
    if len(shape_out) == 2 and len(shape_in) > 2 and shape_out[1] == units * _prod(shape_in[2:]):
        return ("block", _prod(shape_in[2:]))
    return None


def columns(layout, shape, consumer: nn.Module):
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


def is_add(node: fx.Node) -> bool:
    """A sum of two tensors (a skip connection)."""
    if node.op == "call_function" and node.target in (operator.add, torch.add, operator.iadd):
        return len(node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args)
    return node.op == "call_method" and node.target in ("add", "add_") and \
        len(node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args)


LINEAR_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity, nn.AvgPool1d, nn.AvgPool2d,
                  nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten)


def is_linear_op(graph: Graph, node: fx.Node) -> bool:
    """Homogeneous ops that are also linear (no ReLU, no max): they commute with mixing the units."""
    if is_add(node):
        return True
    if node.op == "call_module":
        m = graph.module_of(node)
        return isinstance(m, LINEAR_MODULES) or (isinstance(m, nn.Sequential) and len(m) == 0)
    if node.op == "call_function":
        return node.target in {torch.flatten, torch.mean, torch.sum, F.avg_pool1d, F.avg_pool2d,
                               F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.dropout}
    return node.op == "call_method" and node.target in {"flatten", "view", "reshape", "mean", "sum", "contiguous"}


def parameter_carrier(graph: Graph, node: fx.Node, space: ParamSpace) -> Carrier | None:
    """A parameter used directly (e.g. a learned position embedding), units on its last axis."""
    if node.op != "get_attr" or node.target not in space.shapes:
        return None
    shape = space.shapes[node.target]
    name = node.target
    return Carrier(name, shape[-1], -1, lambda k: [unit_slot(space, name, len(shape) - 1, k)])


def embedding_carrier(graph: Graph, node: fx.Node, space: ParamSpace) -> Carrier | None:
    m = graph.module_of(node)
    if isinstance(m, nn.Embedding):
        name = f"{node.target}.weight"
        return Carrier(node.target, m.embedding_dim, -1, lambda k: [unit_slot(space, name, 1, k)])
    return None


def rescaling_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """Family ``rescaling``: per unit, |outgoing|^2 - |incoming|^2 over a whole *stream*.

    A stream is a connected set of positively homogeneous unit-wise operations
    (ReLU, pooling, flatten, means) and additions (skip connections), fed only
    by carriers and read only by linear consumers. Scaling unit k of every
    carrier by lambda > 0 and of every consumer by 1/lambda leaves the model
    unchanged, hence one law per unit. With a single carrier and consumer this
    is the law of a neuron (Prop 3.5, Thm 3.6); with skip connections it spans
    every block that writes to or reads from the residual stream (a law no
    pair of layers has alone, Thm 4.7).
    """
    carriers: dict[fx.Node, Carrier] = {}
    for node in graph.nodes:
        c = carrier_of(graph, node, space) or parameter_carrier(graph, node, space) \
            or embedding_carrier(graph, node, space)
        if c is not None:
            carriers[node] = c
    internal = {n for n in graph.nodes if is_homogeneous(graph, n) or is_add(n)}
    parent: dict = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a, b):
        parent[find(a)] = find(b)

    for node in graph.nodes:
        if node in internal or node in carriers:
            src = ("out", node) if node in carriers and node not in internal else ("int", node)
            find(src)
            for user in node.users:
                if user in internal:
                    union(src, ("int", user))
                else:
                    union(src, ("in", user))
    groups: dict = {}
    for key in list(parent):
        groups.setdefault(find(key), []).append(key)
    for members in groups.values():
        stream_laws(graph, space, carriers, internal, members, findings)


def stream_laws(graph, space, carriers, internal, members, findings) -> None:
    sources = [n for kind, n in members if kind == "out"]
    sinks = [n for kind, n in members if kind == "in"]
    inner = [n for kind, n in members if kind == "int"]
    if not sources or not sinks:
        return
    units = {carriers[n].units for n in sources}
    if len(units) != 1:
        return
    units = units.pop()
    # every input of an inner node must come from the stream
    stream_nodes = set(sources) | set(inner)
    for n in inner:
        tensor_args = [a for a in n.args if isinstance(a, fx.Node)]
        if is_add(n):
            if not all(a in stream_nodes for a in tensor_args):
                return
        elif not tensor_args or tensor_args[0] not in stream_nodes:
            return
    # layouts: propagate from the sources through the inner nodes
    layout = {n: ("axis", carriers[n].axis) for n in sources}
    pending = [n for n in graph.nodes if n in set(inner)]
    for n in pending:
        ins = [a for a in n.args if isinstance(a, fx.Node) and a in stream_nodes]
        got = {propagate(layout.get(a), graph.shape(a), graph.shape(n), units) if layout.get(a) else None
               for a in ins} if not is_add(n) else {layout.get(a) for a in ins}
        if is_add(n):
            shapes = {graph.shape(a) for a in ins}
            if len(shapes) != 1 or graph.shape(n) not in shapes:
                return
        if len(got) != 1 or None in got:
            return
        layout[n] = got.pop()
    terminals = []
    for sink in sinks:
        feeders = [a for a in sink.args if isinstance(a, fx.Node) and a in stream_nodes]
        if not feeders or sink.args[0] not in stream_nodes:
            return
        m = graph.module_of(sink)
        if consumer_slots(graph, sink, space, [0]) is None:
            return
        cols = columns(layout[sink.args[0]], graph.shape(sink.args[0]), m)
        if cols is None:
            return
        terminals.append((sink, cols))
    mixing = all(is_linear_op(graph, n) for n in inner) and all(carriers[n].mixable for n in sources)
    in_names = ", ".join(dict.fromkeys(carriers[n].module for n in sources))
    out_names = ", ".join(dict.fromkeys(t.target for t, _ in terminals))
    module = carriers[sources[0]].module
    family = "rescaling" if not any(is_add(n) for n in inner) else "rescaling (residual stream)"
    for k in range(units):
        outgoing = [s for t, cols in terminals for s in consumer_slots(graph, t, space, cols(k))]
        incoming = [s for n in sources for s in carriers[n].incoming(k)]
        findings.laws.append(balance_law(f"unit {k}: {in_names} -> {out_names}", outgoing, incoming, family,
                                         module, cause=carriers[sources[0]].cause))
    if not mixing:
        return
    # a linear stream (no ReLU or max-pool inside) is invariant under every invertible A acting on its units:
    # all entries of sum_out Out^T Out - sum_in In In^T are conserved, not only the diagonal
    for a in range(units):
        for b in range(a + 1, units):
            out_a = [s for t, cols in terminals for s in consumer_slots(graph, t, space, cols(a))]
            out_b = [s for t, cols in terminals for s in consumer_slots(graph, t, space, cols(b))]
            in_a = [s for n in sources for s in carriers[n].incoming(a)]
            in_b = [s for n in sources for s in carriers[n].incoming(b)]
            findings.laws.append(gram_law(f"units ({a},{b}): {in_names} -> {out_names}", out_a, out_b, in_a, in_b,
                                          "mixing (linear stream)", module))


def normalization_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """Families ``scale-invariance`` and LayerNorm ``translation`` of layers feeding a normalization."""
    for node in graph.nodes:
        m = graph.module_of(node)
        if not isinstance(m, (nn.Linear, *CONV)) or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        norm = graph.module_of(user) if user.op == "call_module" else None
        if not isinstance(norm, (*BATCHNORM, nn.LayerNorm, nn.GroupNorm)):
            continue
        name, has_bias = node.target, f"{node.target}.bias" in space.shapes
        eps = getattr(norm, "eps", None)
        cause = (f"{type(norm).__name__} eps={eps:g}: the normalization is scale invariant only up to "
                 "O(eps / variance)")
        if isinstance(norm, BATCHNORM):
            if not norm.training and norm.track_running_stats:
                findings.warnings.append(
                    f"{user.target} is a BatchNorm in eval mode: it uses running statistics, so the scale "
                    f"invariance of {name} is gone (call model.train() to analyse training)")
                continue
            for k in range(norm.num_features):
                findings.laws.append(balance_law(f"{name}[{k}] (normalized by {user.target})",
                                                 [unit_slot(space, f"{name}.weight", 0, k)], [],
                                                 "scale-invariance", name, cause=cause))
                if has_bias:
                    findings.laws.append(zero_gradient_law(space, f"{name}.bias", k, name,
                                                           f"cancelled by the mean of {user.target}"))
        elif isinstance(norm, nn.LayerNorm) and isinstance(m, nn.Linear) \
                and tuple(norm.normalized_shape) == (m.out_features,):
            slots = [unit_slot(space, f"{name}.weight", 0, slice(0, m.out_features))]
            if has_bias:
                slots.append(unit_slot(space, f"{name}.bias", 0, slice(0, m.out_features)))
            law = balance_law(f"{name} (normalized by {user.target})", slots, [], "scale-invariance", name, cause)
            findings.laws.append(law)
            translation_laws(space, name, m.in_features, has_bias, f"shift removed by {user.target}", findings)
        elif isinstance(norm, nn.GroupNorm) and isinstance(m, CONV):
            per = norm.num_channels // norm.num_groups
            for g in range(norm.num_groups):
                slots = [unit_slot(space, f"{name}.weight", 0, slice(g * per, (g + 1) * per))]
                findings.laws.append(balance_law(f"{name} group {g} (normalized by {user.target})", slots, [],
                                                 "scale-invariance", name, cause))


def translation_laws(space: ParamSpace, name: str, in_features: int, has_bias: bool, why: str,
                     findings: Findings) -> None:
    for j in range(in_features):
        law = linear_law(f"{name} column {j} ({why})", [unit_slot(space, f"{name}.weight", 1, j)],
                         "translation", name)
        findings.laws.append(law)
    if has_bias:
        n = space.shapes[f"{name}.bias"][0]
        findings.laws.append(linear_law(f"{name} bias sum ({why})", [unit_slot(space, f"{name}.bias", 0,
                                                                                slice(0, n))],
                                        "translation", name))


def softmax_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """Family ``translation`` for the last Linear before softmax + cross-entropy (Prop 3.11)."""
    outputs = [n for n in graph.nodes if n.op == "output"]
    if not outputs:
        return
    last = outputs[0].args[0]
    if isinstance(last, fx.Node) and last.op == "call_module" and isinstance(graph.module_of(last), nn.Linear):
        m = graph.module_of(last)
        translation_laws(space, last.target, m.in_features, f"{last.target}.bias" in space.shapes,
                         "softmax + cross-entropy", findings)


MATMULS = {operator.matmul, torch.matmul, torch.bmm}
TRANSPARENT_METHODS = {"transpose", "permute", "view", "reshape", "contiguous", "mul", "div", "unflatten"}
TRANSPARENT_FUNCTIONS = {torch.transpose, operator.mul, operator.truediv, torch.mul, torch.div, torch.reshape}


def is_matmul(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in MATMULS) or \
        (node.op == "call_method" and node.target in ("matmul", "bmm"))


def is_transparent(node: fx.Node) -> bool:
    """Reshapes, transposes and scalings: they keep which Linear a tensor comes from."""
    return (node.op == "call_method" and node.target in TRANSPARENT_METHODS) or \
        (node.op == "call_function" and node.target in TRANSPARENT_FUNCTIONS)


def source_linear(graph: Graph, node) -> fx.Node | None:
    """The Linear module a tensor comes from, through reshapes, transposes and scalings."""
    while isinstance(node, fx.Node):
        if node.op == "call_module" and isinstance(graph.module_of(node), nn.Linear):
            return node
        if not is_transparent(node):
            return None
        scalars_ok = all(not isinstance(a, fx.Node) for a in node.args[1:])
        if not scalars_ok:
            return None
        node = node.args[0]
    return None


def softmax_of(node: fx.Node) -> fx.Node | None:
    """The softmax a score tensor feeds, through scalings and masks."""
    for _ in range(6):
        users = list(node.users)
        if len(users) != 1:
            return None
        node = users[0]
        if (node.op == "call_function" and node.target in (torch.softmax, F.softmax)) or \
                (node.op == "call_method" and node.target == "softmax"):
            return node
    return None


def handwritten_attention_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """Family ``attention`` for attention written with Linear modules q, k, v, o (eq. 18 with biases).

    Matched: scores = q(x) @ k(x)^T (reshapes, transposes, scalings and masks
    allowed), softmax, then softmax @ v(x), read by a Linear o. Heads: the
    ``num_heads`` (or ``n_heads``, ``heads``) attribute of the module that owns q.
    """
    for node in graph.nodes:
        if not is_matmul(node):
            continue
        lq, lk = source_linear(graph, node.args[0]), source_linear(graph, node.args[1])
        if lq is None or lk is None or lq is lk:
            continue
        soft = softmax_of(node)
        if soft is None:
            continue
        values = [u for u in soft.users if is_matmul(u) and u.args[0] is soft]
        if len(values) != 1:
            continue
        lv = source_linear(graph, values[0].args[1])
        lo = reading_linear(graph, values[0])
        if lv is None or lo is None:
            continue
        q, k, v, o = (n.target for n in (lq, lk, lv, lo))
        d1 = graph.module_of(lq).out_features
        heads = owner_heads(graph, q)
        if d1 % heads or graph.module_of(lk).out_features != d1 or graph.module_of(lv).out_features != d1:
            findings.notes.append(f"attention {q}, {k}, {v}, {o}: shapes do not split into {heads} heads; skipped")
            continue
        dh = d1 // heads

        def row(name: str, i: int) -> list[Slot]:
            return incoming_slots(space, name, i)

        for h in range(heads):
            for a in range(h * dh, (h + 1) * dh):
                for b in range(a, (h + 1) * dh):
                    tag = f"{q}/{k} head {h}" if heads > 1 else f"{q}/{k}"
                    findings.laws.append(gram_law(f"{tag}: (Q Q^T - K K^T)[{a},{b}]", row(q, a), row(q, b),
                                                  row(k, a), row(k, b), "attention", q))
                    findings.laws.append(gram_law(f"{v}/{o}: (V V^T - O^T O)[{a},{b}]", row(v, a), row(v, b),
                                                  [unit_slot(space, f"{o}.weight", 1, a)],
                                                  [unit_slot(space, f"{o}.weight", 1, b)], "attention", v))
        if f"{k}.bias" in space.shapes:
            for i in range(d1):
                findings.laws.append(zero_gradient_law(space, f"{k}.bias", i, k,
                                                       "the key bias shifts every score of a query equally"))


def reading_linear(graph: Graph, node: fx.Node) -> fx.Node | None:
    """The Linear module that reads a tensor, through reshapes and transposes."""
    for _ in range(6):
        users = list(node.users)
        if len(users) != 1:
            return None
        node = users[0]
        if node.op == "call_module" and isinstance(graph.module_of(node), nn.Linear):
            return node
        if not is_transparent(node):
            return None
    return None


def owner_heads(graph: Graph, qualname: str) -> int:
    parts = qualname.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        owner = graph.gm.get_submodule(".".join(parts[:cut])) if cut else graph.module
        for attr in ("num_heads", "n_heads", "heads", "n_head", "nhead"):
            value = getattr(owner, attr, None)
            if isinstance(value, int) and value > 0:
                return value
    return 1


def attention_laws(space: ParamSpace, name: str, m: nn.MultiheadAttention, findings: Findings) -> None:
    """Per-head Q Q^T - K K^T and V V^T - O^T O with biases (Cor 3.9, 3.10), for nn.MultiheadAttention."""
    e, heads = m.embed_dim, m.num_heads
    dh = e // heads
    if m._qkv_same_embed_dim:
        weights = {"q": (f"{name}.in_proj_weight", 0), "k": (f"{name}.in_proj_weight", e),
                   "v": (f"{name}.in_proj_weight", 2 * e)}
    else:
        weights = {"q": (f"{name}.q_proj_weight", 0), "k": (f"{name}.k_proj_weight", 0),
                   "v": (f"{name}.v_proj_weight", 0)}
    bias = f"{name}.in_proj_bias" if f"{name}.in_proj_bias" in space.shapes else None
    offsets = {"q": 0, "k": e, "v": 2 * e}

    def row(which: str, i: int) -> list[Slot]:
        pname, off = weights[which]
        slots = [unit_slot(space, pname, 0, off + i)]
        if bias:
            slots.append(unit_slot(space, bias, 0, offsets[which] + i))
        return slots

    out = f"{name}.out_proj.weight"
    for h in range(heads):
        rows = range(h * dh, (h + 1) * dh)
        for a in rows:
            for b in rows:
                if b < a:
                    continue
                tag = f"{name} head {h}"
                findings.laws.append(gram_law(f"{tag}: (Q Q^T - K K^T)[{a},{b}]", row("q", a), row("q", b),
                                              row("k", a), row("k", b), "attention", name))
                findings.laws.append(gram_law(f"{tag}: (V V^T - O^T O)[{a},{b}]", row("v", a), row("v", b),
                                              [unit_slot(space, out, 1, a)], [unit_slot(space, out, 1, b)],
                                              "attention", name))
    if bias and m.bias_k is None:
        for i in range(e):
            findings.laws.append(zero_gradient_law(space, bias, e + i, name,
                                                   "the key bias shifts every score of a query equally"))


def is_relu(fn) -> bool:
    return fn in (F.relu, torch.relu) or isinstance(fn, nn.ReLU)


"""Attention sites of a graph: scores, softmax, weighted values, with the projection feature of every entry.

A *site* is one computation softmax(A B^T) V where A, B, V come from projections
(:mod:`conslaw.nn.projections`) through movement ops (:mod:`conslaw.nn.tags`):

- scores by ``matmul`` / ``bmm`` / ``einsum`` (a bilinear op, :class:`Bilinear`), a chain of
  shape-preserving ops (scaling, mask, softmax over the keys, dropout at p = 0), then the weighted
  values by ``matmul`` / ``bmm`` / ``einsum``;
- or one ``F.scaled_dot_product_attention`` node (``enable_gqa`` included).

Rotary position embeddings (RoPE, the ``rotate_half`` form of Llama, Mistral, Qwen2:
x cos + rotate_half(x) sin with rotate_half(x) = cat(-x2, x1)) between a projection and
the scores are recognised: the tags pass unchanged and the operand records which features
rotate together (feature i with feature i + dh/2 of its head).

For every batch entry n of the scores (batch x heads, flattened) a site gives the
projection features of the query head, the key head and the value head that meet there:
the *head instances* the attention laws are written with (:mod:`conslaw.nn.attention`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..params import ParamSpace
from .ops import is_add, is_shape_query, is_softmax
from .projections import Projection, projection
from .tags import data_args, feature_tags, is_data, is_identity, is_movement, try_evaluate
from .trace import Graph

aten = torch.ops.aten
MAX_CHAIN = 40
SDPA = {F.scaled_dot_product_attention, aten.scaled_dot_product_attention.default}
MATMUL = {operator.matmul, torch.matmul, torch.bmm}
EINSUM = {torch.einsum, aten.einsum.default}
CAT = {torch.cat, torch.concat, aten.cat.default}
MUL = {operator.mul, torch.mul}


@dataclass
class Operand:
    """A projection's features at an attention operand: ``tags[...]`` = feature; ``rope``: feature -> partner."""

    proj: Projection
    tags: torch.Tensor
    rope: dict[int, int] | None = None


@dataclass
class Instance:
    """One head of one site: the query, key and value features that meet (in contraction order)."""

    site: int
    q: Operand | None  # None (with an empty qvec) when the query was not traced to a projection
    k: Operand | None
    v: Operand
    qvec: tuple[int, ...]
    kvec: tuple[int, ...]
    vvec: tuple[int, ...]


@dataclass
class Site:
    """An attention computation: its output node, and per output batch entry the instance it carries."""

    out: fx.Node
    q: Operand | None  # query and key: None when not traced (the value-side laws still hold)
    k: Operand | None
    v: Operand
    qvecs: torch.Tensor | None  # (n, c) query features per output batch entry
    kvecs: torch.Tensor | None
    vvecs: torch.Tensor  # (n, cv)
    output: Callable[[torch.Tensor], torch.Tensor]  # (n, cv) ids -> ids in the output's layout


def _is_mul(node) -> bool:
    return isinstance(node, fx.Node) and ((node.op == "call_function" and node.target in MUL) or
                                          (node.op == "call_method" and node.target == "mul"))


def _half(graph: Graph, node) -> tuple[fx.Node, int] | None:
    """(x, 0 or 1) when ``node`` is the first or second half of x's last axis (a slice or getitem of x)."""
    if not isinstance(node, fx.Node) or not is_movement(node):
        return None
    ins = data_args(node)
    if len(ins) != 1:
        return None
    x = ins[0]
    sx, sn = graph.shape(x), graph.shape(node)
    if sx is None or sn is None or len(sx) != len(sn) or sx[:-1] != sn[:-1] or sx[-1] != 2 * sn[-1]:
        return None
    got = try_evaluate(graph, node, {x: feature_tags(sx)})
    if got is None:
        return None
    first = int(got.reshape(-1, sn[-1])[0, 0])
    return (x, 0) if first == 0 else (x, 1) if first == sn[-1] else None


def _rotate_half_of(graph: Graph, node) -> fx.Node | None:
    """x when ``node`` is cat(-x2, x1) of the halves of x's last axis."""
    if not isinstance(node, fx.Node) or node.op != "call_function" or node.target not in CAT:
        return None
    parts = node.args[0] if node.args else None
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    if not isinstance(parts, list | tuple) or len(parts) != 2 or dim not in (-1, len(graph.shape(node) or ()) - 1):
        return None
    neg, lo = parts
    if not (isinstance(neg, fx.Node) and is_identity(graph, neg) and neg.target in (operator.neg, torch.neg,
                                                                                    aten.neg.default, "neg")):
        return None
    hi, lo = _half(graph, neg.args[0]), _half(graph, lo)
    if hi is None or lo is None or hi[0] is not lo[0] or (hi[1], lo[1]) != (1, 0):
        return None
    return hi[0]


def rope_input(graph: Graph, node) -> fx.Node | None:
    """x when ``node`` is x * cos + rotate_half(x) * sin (rotary position embedding), else None."""
    if not isinstance(node, fx.Node) or not is_add(node):
        return None
    a, b = node.args[:2]
    for m1, m2 in ((a, b), (b, a)):
        if _is_mul(m1) and _is_mul(m2):
            for x in data_args(m1):
                for r in data_args(m2):
                    if _rotate_half_of(graph, r) is x:
                        return x
    return None


def _rope_pairs(tags: torch.Tensor) -> dict[int, int] | None:
    """feature -> partner for a rotation of the halves of the last axis; None when positions disagree."""
    d = tags.shape[-1]
    flat = tags.reshape(-1, d)
    lo, hi = flat[:, : d // 2], flat[:, d // 2:]
    pairs: dict[int, int] = {}
    for a, b in zip(lo.reshape(-1).tolist(), hi.reshape(-1).tolist(), strict=True):
        if pairs.get(a, b) != b or pairs.get(b, a) != a:
            return None
        pairs[a], pairs[b] = b, a
    return pairs


def operand(graph: Graph, space: ParamSpace, node) -> Operand | None:
    """The projection an attention operand comes from, with the tag of every entry (None if none)."""
    chain: list[tuple[str, fx.Node]] = []
    cur = node
    for _ in range(MAX_CHAIN):
        proj = projection(graph, space, cur)
        if proj is not None:
            break
        x = rope_input(graph, cur)
        if x is not None:
            chain.append(("rope", cur))
            cur = x
            continue
        if not isinstance(cur, fx.Node) or not (is_identity(graph, cur) or is_movement(cur)):
            return None
        ins = data_args(cur)
        if len(ins) != 1:
            return None
        chain.append(("op", cur))
        cur = ins[0]
    else:
        return None
    shape = graph.shape(proj.node)
    if shape is None:
        return None
    env: dict = {proj.node: feature_tags(shape)}
    prev, rope = proj.node, None
    for kind, n in reversed(chain):
        if kind == "rope":
            env[n] = env[prev]
            rope = _rope_pairs(env[n])
            if rope is None:
                return None
        else:
            value = try_evaluate(graph, n, env)
            if value is None:
                return None
            env[n] = value
        prev = n
    value = env[prev]
    return Operand(proj, value, rope) if isinstance(value, torch.Tensor) else None


@dataclass
class Bilinear:
    """A matmul-like op x, y -> out as a batched (n, F1, C) @ (n, C, F2) in canonical layout."""

    x: fx.Node
    y: fx.Node
    to_x: Callable[[torch.Tensor], torch.Tensor]
    to_y: Callable[[torch.Tensor], torch.Tensor]
    from_out: Callable[[torch.Tensor], torch.Tensor]


def bilinear(graph: Graph, node) -> Bilinear | None:
    """``node`` as a :class:`Bilinear` (matmul, bmm, or a two-operand einsum), else None."""
    if not isinstance(node, fx.Node):
        return None
    if (node.op == "call_function" and node.target in MATMUL) or (node.op == "call_method" and
                                                                  node.target in ("matmul", "bmm")):
        x, y = node.args[:2]
        sx, sy = graph.shape(x), graph.shape(y)
        if sx is None or sy is None or len(sx) < 2 or len(sy) < 2:
            return None
        batch = torch.broadcast_shapes(sx[:-2], sy[:-2])
        return Bilinear(x, y, lambda t: t.expand(*batch, *t.shape[-2:]).reshape(-1, *t.shape[-2:]),
                        lambda t: t.expand(*batch, *t.shape[-2:]).reshape(-1, *t.shape[-2:]),
                        lambda t: t.reshape(*batch, *t.shape[-2:]))
    if node.op == "call_function" and node.target in EINSUM:
        return _einsum(graph, node)
    return None


def _einsum(graph: Graph, node: fx.Node) -> Bilinear | None:
    args = list(node.args)
    equation = args.pop(0)
    if len(args) == 1 and isinstance(args[0], list | tuple):
        args = list(args[0])
    if not isinstance(equation, str) or "..." in equation or "->" not in equation or len(args) != 2:
        return None
    ins, out = equation.replace(" ", "").split("->")
    xs, ys = ins.split(",")
    x, y = args
    sx, sy = graph.shape(x), graph.shape(y)
    if sx is None or sy is None or len(set(xs)) != len(xs) or len(set(ys)) != len(ys):
        return None
    size = dict(zip(xs, sx, strict=True)) | dict(zip(ys, sy, strict=True))
    batch = "".join(c for c in out if c in xs and c in ys)
    fx_ = "".join(c for c in out if c in xs and c not in ys)
    fy = "".join(c for c in out if c in ys and c not in xs)
    con = "".join(c for c in xs if c in ys and c not in out)
    if set(xs) != set(batch + fx_ + con) or set(ys) != set(batch + fy + con):
        return None

    def n(letters):
        return int(torch.Size([size[c] for c in letters]).numel())

    return Bilinear(x, y,
                    lambda t: torch.einsum(f"{xs}->{batch}{fx_}{con}", t).reshape(n(batch), n(fx_), n(con)),
                    lambda t: torch.einsum(f"{ys}->{batch}{con}{fy}", t).reshape(n(batch), n(con), n(fy)),
                    lambda t: torch.einsum(f"{batch}{fx_}{fy}->{out}",
                                           t.reshape(*[size[c] for c in batch + fx_ + fy])))


def _constant_rows(t: torch.Tensor) -> torch.Tensor | None:
    """(n, R, c) -> (n, c) when every row along axis 1 is the same, else None."""
    return t[:, 0] if torch.equal(t, t[:, :1].expand_as(t)) else None


def _tags_or_blank(graph: Graph, op: Operand | None, node) -> torch.Tensor | None:
    """The operand's tags, or zeros of the node's shape when the operand was not traced (its heads unknown)."""
    if op is not None:
        return op.tags
    shape = graph.shape(node)
    return None if shape is None else torch.zeros(shape, dtype=torch.long)


def _sdpa_site(graph: Graph, space: ParamSpace, node: fx.Node) -> Site | None:
    q, k, v = (operand(graph, space, a) for a in node.args[:3])
    qt, kt = _tags_or_blank(graph, q, node.args[0]), _tags_or_blank(graph, k, node.args[1])
    if v is None or qt is None or kt is None:
        return None
    vt = v.tags
    if node.kwargs.get("enable_gqa") and qt.dim() >= 3 and kt.shape[-3] != qt.shape[-3]:
        rep = qt.shape[-3] // kt.shape[-3]
        kt, vt = kt.repeat_interleave(rep, dim=-3), vt.repeat_interleave(rep, dim=-3)
    batch = torch.broadcast_shapes(qt.shape[:-2], kt.shape[:-2], vt.shape[:-2])
    Q, K, V = (t.expand(*batch, *t.shape[-2:]).reshape(-1, *t.shape[-2:]) for t in (qt, kt, vt))
    qvecs, kvecs, vvecs = _constant_rows(Q), _constant_rows(K), _constant_rows(V)
    if vvecs is None:
        return None
    L, cv = Q.shape[1], V.shape[2]
    shape = graph.shape(node)
    if shape != (*batch, L, cv):
        return None
    q, k, qvecs, kvecs = _query_key(q, k, qvecs, kvecs)
    return Site(node, q, k, v, qvecs, kvecs, vvecs,
                lambda ids: ids[:, None, :].expand(ids.shape[0], L, cv).reshape(shape))


def _query_key(q, k, qvecs, kvecs):
    """Query and key operands with their per-entry features, both None unless both are traced and consistent."""
    if q is None or k is None or qvecs is None or kvecs is None or qvecs.shape != kvecs.shape:
        return None, None, None, None
    return q, k, qvecs, kvecs


def _follow_to_values(graph: Graph, scores: fx.Node, tags: torch.Tensor) -> tuple[fx.Node, torch.Tensor] | None:
    """From the scores to the weighted-values op: (that op, batch tags of its attention operand), or None.

    The ops between have one tensor-valued user each (helpers that read only the shape and return no
    tensor, such as timm's mask resolution, are ignored): movement ops (evaluated on the tags), and
    shape-preserving ones (scaling, masks, softmax over the last axis, dropout) that keep every entry's
    batch index; one softmax.
    """
    prev, value, softmax_seen = scores, tags, False
    for _ in range(MAX_CHAIN):
        users = [u for u in prev.users if is_data(u) and not is_shape_query(u)]  # not: mask helpers giving None
        if len(users) != 1:
            return None
        node = users[0]
        if softmax_seen and bilinear(graph, node) is not None:
            return (node, value) if bilinear(graph, node).x is prev else None
        if is_softmax(node):
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
            shape = graph.shape(node)
            if shape is None or dim not in (-1, len(shape) - 1) or softmax_seen:
                return None
            softmax_seen = True
        elif is_movement(node) and data_args(node) == [prev]:
            value = try_evaluate(graph, node, {prev: value})
            if value is None:
                return None
        elif graph.shape(node) != graph.shape(prev) or node.op not in ("call_function", "call_method",
                                                                       "call_module"):
            return None
        prev = node
    return None


def _matmul_site(graph: Graph, space: ParamSpace, node: fx.Node) -> Site | None:
    scores = bilinear(graph, node)
    if scores is None:
        return None
    q, kt = operand(graph, space, scores.x), operand(graph, space, scores.y)
    xt, yt = _tags_or_blank(graph, q, scores.x), _tags_or_blank(graph, kt, scores.y)
    if xt is None or yt is None:
        return None
    Q, K = scores.to_x(xt), scores.to_y(yt).transpose(1, 2)
    n, T, S = Q.shape[0], Q.shape[1], K.shape[1]
    batch_tags = scores.from_out(torch.arange(n)[:, None, None].expand(n, T, S))
    found = _follow_to_values(graph, node, batch_tags)
    if found is None:
        return None
    out, att_tags = found
    values = bilinear(graph, out)
    v = operand(graph, space, values.y)
    if v is None:
        return None
    A, V = values.to_x(att_tags), values.to_y(v.tags)
    rows = _constant_rows(A.reshape(A.shape[0], -1, 1))
    vvecs = _constant_rows(V)
    if rows is None or vvecs is None:
        return None
    index = rows[:, 0]
    m, T2, cv = A.shape[0], A.shape[1], V.shape[2]
    k = None if kt is None else Operand(kt.proj, kt.tags.transpose(-2, -1), kt.rope)
    q, k, qvecs, kvecs = _query_key(q, k, _constant_rows(Q), _constant_rows(K))
    return Site(out, q, k, v, None if qvecs is None else qvecs[index], None if kvecs is None else kvecs[index],
                vvecs, lambda ids: values.from_out(ids[:, None, :].expand(m, T2, cv)))


def _reaches_softmax(node: fx.Node, steps: int = 6) -> bool:
    """A softmax among the next single users of ``node`` (scores that were not read as a site)."""
    for _ in range(steps):
        users = list(node.users)
        if len(users) != 1:
            return False
        node = users[0]
        if is_softmax(node):
            return True
    return False


def attention_sites(graph: Graph, space: ParamSpace) -> tuple[list[Site], list[str]]:
    """Every attention site of the graph, and notes on softmaxes that look like attention but were not read."""
    sites: list[Site] = []
    notes: list[str] = []
    for node in graph.nodes:
        site = None
        if node.op == "call_function" and node.target in SDPA:
            site = _sdpa_site(graph, space, node)
            if site is None:
                notes.append(f"attention {node.name}: value not traced to a projection through reshapes; no "
                             "attention law named there")
        elif bilinear(graph, node) is not None:
            site = _matmul_site(graph, space, node)
            if site is None and _reaches_softmax(node):
                notes.append(f"attention scores {node.name}: value not traced to a projection through reshapes; "
                             "no attention law named there")
        if site is not None:
            sites.append(site)
            if site.q is None:
                notes.append(f"attention {site.out.name}: query or key not traced to a projection through reshapes "
                             "(an op between them and the scores that is not a reshape, scaling or rotary "
                             "embedding); only its V V^T - O^T O laws are named")
    return sites, notes

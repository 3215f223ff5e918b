"""Family ``translation (into LayerNorm)``: writers of a stream that only LayerNorms read.

A LayerNorm over the last axis removes any shift shared by all features of a
token. If a stream (a sum of writers, through additions such as residual
connections) is read only by LayerNorms over its features, every writer may
add its own per-token constant c(x) 1 without changing the model:

- a Linear writer W x + b: W += 1 a^T, b += t 1, so its column sums sum_i W[i, j]
  and its bias sum are conserved (exact);
- a token embedding E[ids]: E[t] += s_t 1 for each token t: the row sums sum_d E[t, d];
- a parameter P added as is (learned positions, rows = positions): the row sums sum_d P[p, d];
- a LayerNorm affine writer gamma * n + beta: sum_d beta_d;
- a Linear across the tokens (MLP-Mixer's token mixing, transposed back): each bias entry b_t;
- an ``nn.MultiheadAttention``: its out_proj, as a Linear writer;
- a ViT patch embedding conv(x).reshape(B, C, -1).permute(0, 2, 1): per input coordinate (c, i, j) of its
  filters, sum_o W[o, c, i, j], and its bias sum; a class token param.expand(B, -1, -1) joined by torch.cat
  along the tokens: its row sum.

A stream read only by LayerNorms and RMSNorms has a ``scale-invariance`` law (every writer
scaled by c > 0; approximate because of eps); with an RMSNorm among its readers no translation law.

This covers a Linear directly before a LayerNorm, the residual stream of a
pre-LN Transformer (every block writes into it, and LayerNorms are its only
readers besides the additions), and post-LN sums x + f(x) when x itself is a
writer of the same kind.
"""

from __future__ import annotations

import itertools
import operator

import torch
import torch.fx as fx
from torch import nn

from ..laws import Slot, balance_law, linear_law, unit_slot
from ..params import ParamSpace
from .findings import Findings
from .norms import is_feature_norm, is_layernorm2d, is_rmsnorm, norm_eps
from .ops import CONV, DROPOUT, is_add, is_shape_query
from .projections import is_conv1d
from .trace import Graph

FAMILY = "translation (into LayerNorm)"


def patchify_conv(graph: Graph, node: fx.Node) -> fx.Node | None:
    """The Conv of ``conv(x).reshape(B, C, -1).permute(0, 2, 1)`` (or flatten(2).transpose(1, 2)): a ViT's patch
    embedding, whose channels become the features of the tokens; None for anything else."""
    if node.op != "call_method" or not node.args or not isinstance(node.args[0], fx.Node):
        return None
    dims = tuple(node.args[1:])
    if not ((node.target == "permute" and dims == (0, 2, 1)) or (node.target == "transpose" and set(dims) == {1, 2})):
        return None
    flat = node.args[0]
    if flat.op != "call_method" or flat.target not in ("reshape", "view", "flatten") or \
            not isinstance(flat.args[0], fx.Node) or len(graph.shape(flat) or ()) != 3:
        return None
    conv = flat.args[0]
    m = graph.module_of(conv) if conv.op == "call_module" else None
    if not isinstance(m, CONV) or m.groups != 1 or graph.shape(flat)[1] != m.out_channels:
        return None
    return conv


def expanded_parameter(graph: Graph, node: fx.Node, space: ParamSpace) -> fx.Node | None:
    """The parameter of ``param.expand(B, -1, -1)`` (a ViT's class token), else None."""
    if node.op == "call_method" and node.target == "expand" and isinstance(node.args[0], fx.Node) \
            and node.args[0].op == "get_attr" and node.args[0].target in space.shapes:
        return node.args[0]
    return None


def conv_writer_slots(graph: Graph, conv: fx.Node, space: ParamSpace) -> list[tuple[str, list[Slot]]]:
    """A conv writer read by a LayerNorm over its channels: per input coordinate (c, i, j), sum_o W[o, c, i, j];
    the bias sum.

    W[o, c, i, j] += t for every o adds t x[c, i + ., j + .] to every output channel alike (a shift the
    LayerNorm removes) only when every output channel reads input channel c: a grouped (depthwise) conv
    (groups > 1) reads a different input per group, so only its bias sum is a law.
    """
    name = conv.target
    idx = space.indices(f"{name}.weight")
    out = []
    groups = getattr(graph.module_of(conv), "groups", 1)
    coordinates = itertools.product(*(range(n) for n in idx.shape[1:])) if groups == 1 else ()
    for flat, where in enumerate(coordinates):
        text = f"{name}.weight[:,{','.join(map(str, where))}]"
        out.append((f"{name} input {where}", [Slot(f"{name}.weight", idx[(slice(None), *where)].clone(), text, 0,
                                                   (flat,))]))
    if f"{name}.bias" in space.shapes:
        out.append((f"{name} bias sum", [unit_slot(space, f"{name}.bias", 0, slice(0, idx.shape[0]))]))
    return out


def _writer_module(graph: Graph, node: fx.Node, space: ParamSpace) -> str:
    """The module (or parameter) a writer node stands for."""
    return str((patchify_conv(graph, node) or expanded_parameter(graph, node, space)
                or token_mixing_source(graph, node) or node).target)


def _writer_slots(graph: Graph, node: fx.Node, space: ParamSpace) -> list[tuple[str, list[Slot]]] | None:
    """The conserved sums of a writer node as (label, slots), or None when it is not a writer."""
    conv = patchify_conv(graph, node)
    if conv is not None:
        return conv_writer_slots(graph, conv, space)
    node = expanded_parameter(graph, node, space) or node
    if node.op == "get_attr" and node.target in space.shapes and len(space.shapes[node.target]) >= 2:
        name, shape = node.target, space.shapes[node.target]
        rows = space.indices(name).reshape(-1, shape[-1])
        lead = shape[:-1]
        out = []
        for r in range(rows.shape[0]):
            where, rest = [], r
            for size in reversed(lead):
                where.append(rest % size)
                rest //= size
            text = f"{name}[{','.join(map(str, reversed(where)))},:]"
            out.append((f"{name} row {r}", [Slot(name, rows[r].clone(), text, len(shape) - 1, (r,))]))
        return out
    if node.op != "call_module":
        return token_mixing_bias(graph, node, space)
    m, name = graph.module_of(node), node.target
    if isinstance(m, nn.MultiheadAttention):
        m, name = m.out_proj, f"{name}.out_proj"
    if isinstance(m, nn.Linear):
        out = [(f"{name} column {j}", [unit_slot(space, f"{name}.weight", 1, j)]) for j in range(m.in_features)]
        if f"{name}.bias" in space.shapes:
            out.append((f"{name} bias sum", [unit_slot(space, f"{name}.bias", 0, slice(0, m.out_features))]))
        return out
    if is_conv1d(m):  # Hugging Face Conv1D x W + b, W of shape (in, out): the row sums of W
        nx, nf = m.weight.shape
        out = [(f"{name} input {j}", [unit_slot(space, f"{name}.weight", 0, j)]) for j in range(nx)]
        if f"{name}.bias" in space.shapes:
            out.append((f"{name} bias sum", [unit_slot(space, f"{name}.bias", 0, slice(0, nf))]))
        return out
    if isinstance(m, nn.Embedding):
        weight = f"{name}.weight"
        return [(f"{weight} row {t}", [unit_slot(space, weight, 0, t)]) for t in range(m.num_embeddings)]
    if isinstance(m, nn.LayerNorm) and f"{name}.bias" in space.shapes and len(m.normalized_shape) == 1:
        return [(f"{name}.bias sum", [unit_slot(space, f"{name}.bias", 0, slice(0, m.normalized_shape[0]))])]
    return None


def token_mixing_source(graph: Graph, node: fx.Node) -> fx.Node | None:
    """The Linear of :func:`token_mixing_bias` when ``node`` is its output moved back, else None."""
    from .layer_scale import unit_tags

    found = unit_tags(graph, node) if node.op != "call_module" else None
    if found is None:
        return None
    source, tags = found
    if not isinstance(graph.module_of(source), nn.Linear) or tags.dim() < 2 or tags.shape[-1] < 2 or \
            not torch.equal(tags, tags[..., :1].expand_as(tags)):
        return None
    return source


def token_mixing_bias(graph: Graph, node: fx.Node, space: ParamSpace) -> list[tuple[str, list[Slot]]] | None:
    """A Linear applied across the tokens and moved back (MLP-Mixer: ``fc(x.transpose(1, 2)).transpose(1, 2)``).

    Its output unit t is token t, the same at every feature: bias b_t adds b_t to every feature of token t,
    a shift the LayerNorm readers remove, so each entry b_t is conserved (exact); its weights give token t a
    different value at each feature and have no such law. The layout is read by running the movement ops on
    tags (:func:`conslaw.nn.layer_scale.unit_tags`): constant along the last (normalized) axis.
    """
    source = token_mixing_source(graph, node)
    if source is None:
        return None
    m = graph.module_of(source)
    bias = f"{source.target}.bias"
    if bias not in space.shapes:
        return []
    return [(f"{bias}[{t}] (a shift of token {t})", [unit_slot(space, bias, 0, t)]) for t in range(m.out_features)]


def _passes_shift(graph: Graph, node: fx.Node) -> bool:
    """Ops a per-token shift c 1 passes through unchanged in form: additions, dropout, identity, and
    taking the output (item 0) of an ``nn.MultiheadAttention`` call."""
    if is_add(node):
        return True
    if node.op == "call_function" and node.target is torch.cat:  # tokens joined along a non-feature axis
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        shape = graph.shape(node)
        return shape is not None and dim not in (-1, len(shape) - 1)
    if node.op == "call_function" and node.target is operator.getitem and node.args[1] == 0:
        source = node.args[0]
        return isinstance(source, fx.Node) and source.op == "call_module" and \
            isinstance(graph.module_of(source), nn.MultiheadAttention)
    if node.op == "call_module":
        return isinstance(graph.module_of(node), (*DROPOUT, nn.Identity))
    return node.op == "call_method" and node.target == "contiguous"


def _out_shape(graph: Graph, node: fx.Node) -> tuple[int, ...] | None:
    """The output shape of a writer; for an attention call (a tuple), that of its output item."""
    shape = graph.shape(node)
    if shape is None:
        items = [u for u in node.users if u.op == "call_function" and u.target is operator.getitem and u.args[1] == 0]
        shape = graph.shape(items[0]) if items else None
    return shape


def _module(graph: Graph, node: fx.Node) -> nn.Module | None:
    return graph.module_of(node) if node.op == "call_module" else None


def _reads_as_layernorm(graph: Graph, node: fx.Node, units: int) -> bool:
    m = graph.module_of(node) if node.op == "call_module" else None
    return isinstance(m, nn.LayerNorm) and tuple(m.normalized_shape) == (units,) and not is_layernorm2d(m)


def shift_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """The translation laws of every writer of a stream read only by LayerNorms (see the module docstring)."""
    seen: set = set()
    for start in graph.nodes:
        if start in seen or _writer_slots(graph, start, space) is None:
            continue
        writers, inner, readers, frontier = {start}, set(), set(), [start]
        while frontier:
            node = frontier.pop()
            for user in node.users:
                if is_shape_query(user) or (not user.users and user.op in ("call_function", "call_method")):
                    continue  # a shape query or a dead value (e.g. the unused attention weights) reads nothing
                if _passes_shift(graph, user):
                    if user not in inner:
                        inner.add(user)
                        frontier.append(user)
                        for arg in user.all_input_nodes:  # the other summands: writers into the same stream
                            while arg not in inner and not is_add(arg) and _passes_shift(graph, arg) \
                                    and len(arg.all_input_nodes) == 1:  # dropout(attention(x)[0]): the attention
                                inner.add(arg)
                                arg = arg.all_input_nodes[0]
                            if arg not in inner and arg not in writers:
                                writers.add(arg)
                                frontier.append(arg)
                else:
                    readers.add(user)
        seen |= writers
        shape = _out_shape(graph, start)
        if not readers or shape is None:
            continue
        units = shape[-1]
        if not all(is_feature_norm(_module(graph, r), units) for r in readers):
            continue  # a reader that is not a LayerNorm / RMSNorm over the features: no law
        if any(_out_shape(graph, w) is None or _out_shape(graph, w)[-1] != units for w in writers):
            continue
        shared = set(graph.tied().values())  # a tied parameter is read elsewhere too (GPT-2's wte and lm_head)
        ordered = sorted(writers, key=graph.nodes.index)
        stream_scale_law(graph, space, ordered, readers, shared, findings)
        if not all(_reads_as_layernorm(graph, r, units) for r in readers):
            continue  # an RMSNorm reader keeps the mean: no translation law
        for writer in ordered:
            for label, slots in _writer_slots(graph, writer, space) or []:
                if any(slot.name in shared for slot in slots):
                    continue
                findings.laws.append(linear_law(f"{label} (shift removed by "
                                                f"{', '.join(sorted(r.target for r in readers))})", slots,
                                                family=FAMILY, module=_writer_module(graph, writer, space)))


def _whole_slots(graph: Graph, node: fx.Node, space: ParamSpace) -> list[Slot] | None:
    """Every parameter of a writer, as whole slots (its output is linear in them), or None."""
    node = patchify_conv(graph, node) or expanded_parameter(graph, node, space) or node
    if node.op == "get_attr" and node.target in space.shapes:
        return [unit_slot(space, node.target, 0, slice(0, space.shapes[node.target][0]))]
    if node.op != "call_module":
        return None
    m, name = graph.module_of(node), node.target
    if isinstance(m, nn.MultiheadAttention):
        name = f"{name}.out_proj"
    elif not isinstance(m, (nn.Linear, nn.Embedding, nn.LayerNorm, *CONV)) and not is_rmsnorm(m):
        return None
    names = [f"{name}.{p}" for p in ("weight", "bias") if f"{name}.{p}" in space.shapes]
    return [unit_slot(space, p, 0, slice(0, space.shapes[p][0])) for p in names] or None


def stream_scale_law(graph: Graph, space: ParamSpace, writers: list[fx.Node], readers: set[fx.Node],
                     shared: set[str], findings: Findings) -> None:
    """``scale-invariance`` of a stream read only by LayerNorms or RMSNorms.

    Scaling every writer's parameters by c > 0 scales the stream by c, which the normalizations remove up to
    their eps: sum_writers |w|^2 is conserved approximately (exactly at eps = 0). A single Linear writer is
    left to :mod:`conslaw.nn.normalization`."""
    if len(writers) == 1 and writers[0].op == "call_module" and isinstance(graph.module_of(writers[0]), nn.Linear):
        return
    slots = [_whole_slots(graph, w, space) for w in writers]
    if any(s is None for s in slots) or any(slot.name in shared for s in slots for slot in s):
        return
    names = ", ".join(sorted(r.target for r in readers))
    eps = max(norm_eps(graph.module_of(r)) for r in readers)
    findings.laws.append(balance_law(f"stream scale (normalized by {names})", [x for s in slots for x in s], [],
                                     family="scale-invariance", module=_writer_module(graph, writers[0], space),
                                     approximate_cause=(
                                         f"LayerNorm eps={eps:g}: scale invariant only up to O(eps / variance)")))

"""Laws of summed embeddings: x = E[ids] + P, a token embedding plus a position table.

- ``translation (summed embeddings)``: moving every token row of E by v and every position
  row of P by -v leaves x unchanged, so for every feature d, sum_t E[t, d] - sum_p P[p, d]
  is conserved (exact; it needs one E row and one P row per position, i.e. P has one row per
  position of the input). P may also be an ``nn.Embedding`` looked up at fixed positions
  (GPT-2's ``wpe(arange(T))``, :mod:`.fixed_lookups`): then the sum runs over the rows read.
  When E is tied to a linear output head (GPT-2's ``lm_head.weight`` is ``wte.weight``), moving
  E by v also adds <x_final, v> to every logit alike, which a softmax cross-entropy removes: the
  law holds for that loss only, and is emitted only with it. Not with a ``padding_idx``: nn.Embedding
  zeroes that row's gradient although the row is read, so the flow does not move all rows alike;
- ``scale-invariance`` of a post-LN encoder's input: scaling x by c > 0 (E and P by c) while
  the first layer's query and key rows are divided by c and its value and output biases
  multiplied by c scales norm1's input x + sa(x) by c, which norm1 removes up to its eps:
  |E|^2 + |P|^2 + |b_v|^2 + |b_o|^2 - |Q|^2 - |K|^2 is conserved approximately (exactly at eps = 0).
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from ..laws import Slot, linear_law, unit_slot
from ..params import ParamSpace
from .attention import MHALayout
from .findings import Findings
from .fixed_lookups import fixed_rows, lookups_of
from .handlers import norm1_input_scale_law
from .ops import is_add
from .trace import Graph


def summands(graph: Graph, node: fx.Node, space: ParamSpace) -> tuple[fx.Node, fx.Node] | None:
    """(embedding node, position-parameter node) when ``node`` adds exactly those two."""
    if not is_add(node):
        return None
    a, b = node.args
    for emb, pos in ((a, b), (b, a)):
        if emb.op == "call_module" and isinstance(graph.module_of(emb), nn.Embedding) \
                and pos.op == "get_attr" and pos.target in space.shapes:
            return emb, pos
    return None


#: ops between a tied head's logits and the model output that keep every logit as it is
_SHAPE_ONLY = {"view", "reshape", "contiguous", "flatten", "float", "double", "to"}


def _feeds_output_only(node: fx.Node) -> bool:
    """``node``'s value reaches the graph output unchanged up to shape (no other reader)."""
    for user in node.users:
        if user.op == "output":
            continue
        if user.op != "call_method" or user.target not in _SHAPE_ONLY or not _feeds_output_only(user):
            return False
    return True


def tied_head_is_shift_invariant(graph: Graph, weight: str, emb: fx.Node, softmax: bool) -> bool:
    """Moving every row of ``weight`` by v changes the loss nowhere but through the lookup ``emb``.

    True when ``emb`` is the only reader, or when the others are bias-free linear heads F.linear(x, E)
    whose logits are the model output and the loss is a softmax cross-entropy (``softmax``: every logit
    moves by the same <x, v>; the built-in cross_entropy, next_token and Hugging Face's own loss).
    """
    calls, others = lookups_of(graph, weight)
    if calls != [emb]:
        return False
    for node in others:
        if node.op != "get_attr":
            return False
        for user in node.users:
            linear = user.op == "call_function" and user.target in (torch.nn.functional.linear, torch._C._nn.linear)
            if not linear or len(user.args) != 2 or user.args[1] is not node or user.kwargs.get("bias") is not None \
                    or not softmax or not _feeds_output_only(user):
                return False
    return True


def position_rows(graph: Graph, node: fx.Node, space: ParamSpace) -> tuple[fx.Node, str, torch.Tensor] | None:
    """(embedding node, position table, rows read) when ``node`` adds a token embedding and a position table.

    The table is a parameter added whole (all rows read) or an ``nn.Embedding`` looked up at fixed positions.
    """
    pair = summands(graph, node, space)
    if pair is not None:
        emb, pos = pair
        out_shape, pos_shape = graph.shape(node), space.shapes[pos.target]
        if len(pos_shape) != 2 or out_shape is None or out_shape[-2] != pos_shape[0]:
            return None
        return emb, pos.target, torch.arange(pos_shape[0])
    if not is_add(node):
        return None
    a, b = node.args
    for emb, pos in ((a, b), (b, a)):
        if emb.op != "call_module" or not isinstance(graph.module_of(emb), nn.Embedding) \
                or fixed_rows(graph, emb, space) is not None:
            continue
        rows = fixed_rows(graph, pos, space)
        table = graph.param_name(str(pos.target)) if pos.op == "call_module" else None
        if rows is not None and table in space.shapes:
            return emb, table, rows
    return None


def embedding_laws(graph: Graph, space: ParamSpace, findings: Findings, softmax: bool = False) -> None:
    """Both families of the module docstring, wherever the graph adds a token embedding and a position table.

    ``softmax``: the loss is a softmax cross-entropy, which allows the shift law on an embedding tied to the
    output head.
    """
    for node in graph.nodes:
        found = position_rows(graph, node, space)
        if found is None:
            continue
        emb, table, rows = found
        weight = graph.param_name(str(emb.target))
        dim, padding = graph.module_of(emb).embedding_dim, graph.module_of(emb).padding_idx
        # a padding_idx row gets a zeroed gradient although it is read: the flow no longer shifts all rows alike
        if weight not in space.shapes or space.shapes[table][-1] != dim or padding is not None \
                or not tied_head_is_shift_invariant(graph, weight, emb, softmax):
            continue
        every_row = rows.numel() == space.shapes[table][0]
        for d in range(dim):
            pos_slot = unit_slot(space, table, 1, d) if every_row else \
                Slot(table, space.indices(table)[rows, d].clone(), f"{table}[{_rows_text(rows)},{d}]", 1, (d,))
            findings.laws.append(linear_law(f"feature {d}: {weight} - {table}", [unit_slot(space, weight, 1, d)],
                                            [pos_slot], family="translation (summed embeddings)",
                                            module=str(emb.target), unit=(d,)))
        pos = next(a for a in node.args if a is not emb)
        if pos.op == "get_attr":
            input_scale_law(graph, node, emb, pos, space, findings)


def _rows_text(rows: torch.Tensor) -> str:
    """``0:5`` for consecutive rows, else ``0,2,3``."""
    r = rows.tolist()
    return f"{r[0]}:{r[-1] + 1}" if r == list(range(r[0], r[-1] + 1)) else ",".join(map(str, r))


def input_scale_law(graph: Graph, node: fx.Node, emb: fx.Node, pos: fx.Node, space: ParamSpace,
                    findings: Findings) -> None:
    """The approximate input-scale law when the summed embeddings feed only a post-LN encoder (or layer)."""
    users = list(node.users)
    if len(users) != 1 or users[0].op != "call_module":
        return
    target = graph.module_of(users[0])
    name = users[0].target
    if isinstance(target, nn.TransformerEncoder):
        layer, prefix = target.layers[0], f"{name}.layers.0"
    elif isinstance(target, nn.TransformerEncoderLayer):
        layer, prefix = target, name
    else:
        return
    if layer.norm_first or not layer.self_attn._qkv_same_embed_dim:
        return
    layout = MHALayout.of(f"{prefix}.self_attn", layer.self_attn)
    weight = space.shapes.get(layout.weight("q")[0])
    if weight is None or layout.bias is None or f"{layout.name}.out_proj.bias" not in space.shapes:
        return
    carriers = [unit_slot(space, p, 0, slice(0, space.shapes[p][0])) for p in (f"{emb.target}.weight", pos.target)]
    findings.laws.append(norm1_input_scale_law(space, layout, layer, prefix, carriers))

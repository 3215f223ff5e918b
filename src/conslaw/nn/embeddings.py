"""Laws of summed embeddings: x = E[ids] + P, a token embedding plus a position table.

- ``translation (summed embeddings)``: moving every token row of E by v and every position
  row of P by -v leaves x unchanged, so for every feature d, sum_t E[t, d] - sum_p P[p, d]
  is conserved (exact; it needs one E row and one P row per position, i.e. P has one row per
  position of the input);
- ``scale-invariance`` of a post-LN encoder's input: scaling x by c > 0 (E and P by c) while
  the first layer's query and key rows are divided by c and its value and output biases
  multiplied by c scales norm1's input x + sa(x) by c, which norm1 removes up to its eps:
  |E|^2 + |P|^2 + |b_v|^2 + |b_o|^2 - |Q|^2 - |K|^2 is conserved approximately (exactly at eps = 0).
"""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from ..laws import balance_law, linear_law, unit_slot
from ..params import ParamSpace
from .attention import MHALayout
from .findings import Findings
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


def embedding_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """Both families of the module docstring, wherever the graph adds a token embedding and a position table."""
    for node in graph.nodes:
        pair = summands(graph, node, space)
        if pair is None:
            continue
        emb, pos = pair
        weight, table = f"{emb.target}.weight", pos.target
        dim = graph.module_of(emb).embedding_dim
        out_shape, pos_shape = graph.shape(node), space.shapes[table]
        if pos_shape[-1] != dim or out_shape is None or len(pos_shape) != 2 or out_shape[-2] != pos_shape[0]:
            continue
        for d in range(dim):
            findings.laws.append(linear_law(f"feature {d}: {weight} - {table}", [unit_slot(space, weight, 1, d)],
                                            [unit_slot(space, table, 1, d)], family="translation (summed embeddings)",
                                            module=emb.target, unit=(d,)))
        input_scale_law(graph, node, emb, pos, space, findings)


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
    e = layout.embed_dim
    weight = space.shapes.get(layout.weight("q")[0])
    if weight is None or layout.bias is None or f"{layout.name}.out_proj.bias" not in space.shapes:
        return
    plus = [unit_slot(space, p, 0, slice(0, space.shapes[p][0])) for p in (f"{emb.target}.weight", pos.target)]
    plus += [unit_slot(space, layout.bias, 0, slice(2 * e, 3 * e)),
             unit_slot(space, f"{layout.name}.out_proj.bias", 0, slice(0, e))]
    minus = [unit_slot(space, layout.weight("q")[0], 0, slice(0, 2 * e))]
    findings.laws.append(balance_law(f"{prefix}.norm1 input scale", plus, minus, family="scale-invariance",
                                     module=f"{prefix}.norm1", approximate_cause=(
                                         f"LayerNorm eps={layer.norm1.eps:g}: scale invariant only up to "
                                         "O(eps / variance)")))

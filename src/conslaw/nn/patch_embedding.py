"""Family ``translation (summed embeddings)`` of a ViT's input: x = cat(class token, patches) + P.

torchvision's (and timm's) ViT builds its input stream as
cat([cls.expand(B, -1, -1), conv(img).reshape(B, C, -1).permute(0, 2, 1)], dim=1) + P,
with P of shape (1, 1 + T, E). Two parameters only ever appear as a sum, so moving one by v
and the other by -v leaves the model unchanged (exact), for every feature d:

- the class token and its position row: cls[0, 0, d] - P[0, 0, d];
- the patch conv's bias and the position rows of the patches: b[d] - sum_{t >= 1} P[0, t, d]
  (every patch token gets b + P[t]).

(The row-sum translations of cls, P and the conv, removed by the LayerNorms, are in
:mod:`conslaw.nn.shift`; summed over d these laws depend on them.)
"""

from __future__ import annotations

import torch
import torch.fx as fx

from ..laws import Slot, linear_law, unit_slot
from ..params import ParamSpace
from .findings import Findings
from .ops import is_add
from .shift import expanded_parameter, patchify_conv
from .trace import Graph

FAMILY = "translation (summed embeddings)"


def _pieces(graph: Graph, node: fx.Node) -> list[fx.Node] | None:
    """The tensors joined by ``torch.cat(..., dim=1)``, or None."""
    if node.op != "call_function" or node.target is not torch.cat:
        return None
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    seq = node.args[0]
    return list(seq) if dim == 1 and isinstance(seq, (list, tuple)) and all(isinstance(a, fx.Node) for a in seq) \
        else None


def patch_embedding_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """The laws of the module docstring wherever a cat of class tokens and patches gets a position table."""
    for node in graph.nodes:
        if not is_add(node):
            continue
        for joined, pos in (node.args, node.args[::-1]):
            pieces = _pieces(graph, joined)
            if pieces is None or pos.op != "get_attr" or pos.target not in space.shapes:
                continue
            table, shape = pos.target, space.shapes[pos.target]
            if len(shape) != 3 or shape[0] != 1 or graph.shape(joined) is None or \
                    tuple(graph.shape(joined)[1:]) != tuple(shape[1:]):
                continue
            rows = space.indices(table)[0]  # (tokens, E)
            start = 0
            for piece in pieces:
                count = graph.shape(piece)[1]
                param, conv = expanded_parameter(graph, piece, space), patchify_conv(graph, piece)
                for d in range(shape[2]):
                    pos_slot = Slot(table, rows[start:start + count, d].clone(),
                                    f"{table}[0,{start}:{start + count},{d}]", 2, (d,))
                    if param is not None and tuple(space.shapes[param.target]) == (1, count, shape[2]):
                        cls = Slot(param.target, space.indices(param.target)[0, :, d].clone(),
                                   f"{param.target}[0,:,{d}]", 2, (d,))
                        if count == 1:
                            findings.laws.append(linear_law(f"feature {d}: {param.target} - {table}", [cls],
                                                            [pos_slot], family=FAMILY, module=param.target,
                                                            unit=(d,)))
                    elif conv is not None and f"{conv.target}.bias" in space.shapes:
                        findings.laws.append(linear_law(
                            f"feature {d}: {conv.target}.bias - {table}",
                            [unit_slot(space, f"{conv.target}.bias", 0, d)], [pos_slot], family=FAMILY,
                            module=str(conv.target), unit=(d,)))
                start += count

"""Family ``attention``: per head, Q_h Q_h^T - K_h K_h^T and V_h V_h^T - O_h^T O_h (Cor 3.9, 3.10).

Biases are appended as an extra column of Q, K, V (eq. 18 with biases); the key
bias has zero gradient (softmax ignores a shift shared by all keys). Two forms
are recognized:

- ``nn.MultiheadAttention`` (packed ``in_proj_weight`` or separate q/k/v
  weights): :class:`MHALayout` is the one place that layout is decoded;
- attention written with four Linear modules q, k, v, o: scores = q(x) @ k(x)^T
  (reshapes, transposes, scalings and masks allowed), softmax, softmax @ v(x),
  read by o; heads from the ``num_heads`` (``n_heads``, ``heads``, ...) attribute of the owner.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx
from torch import nn

from ..laws import Slot, coordinate_law, gram_law, unit_slot
from ..params import ParamSpace
from .findings import Findings
from .ops import is_matmul, is_softmax, is_transparent
from .trace import Graph

QK = "Q Q^T - K K^T"
VO = "V V^T - O^T O"
KEY_BIAS = "the key bias shifts every score of a query equally"


@dataclass(frozen=True)
class MHALayout:
    """Where the projections of an ``nn.MultiheadAttention`` named ``name`` live among its parameters.

    q, k, v rows: weight ``weights[w]`` rows ``offset[w] + i``; bias ``in_proj_bias``
    rows ``{q: 0, k: E, v: 2E}[w] + i``; output ``out_proj.weight`` column i.
    """

    name: str
    embed_dim: int
    num_heads: int
    packed: bool
    has_bias: bool

    @classmethod
    def of(cls, name: str, m: nn.MultiheadAttention) -> MHALayout:
        """The layout of module ``m`` registered under ``name``."""
        return cls(name, m.embed_dim, m.num_heads, m._qkv_same_embed_dim, m.in_proj_bias is not None)

    @property
    def head_dim(self) -> int:
        """Rows per head."""
        return self.embed_dim // self.num_heads

    def weight(self, which: str) -> tuple[str, int]:
        """(parameter name, row offset) of projection ``which`` in ``q``, ``k``, ``v``."""
        if self.packed:
            return f"{self.name}.in_proj_weight", "qkv".index(which) * self.embed_dim
        return f"{self.name}.{which}_proj_weight", 0

    def input_weights(self) -> list[str]:
        """The parameters that read the input (their columns are input features)."""
        return [f"{self.name}.in_proj_weight"] if self.packed else [self.weight(w)[0] for w in "qkv"]

    @property
    def bias(self) -> str | None:
        """The packed q/k/v bias, if any."""
        return f"{self.name}.in_proj_bias" if self.has_bias else None

    @property
    def out_weight(self) -> str:
        """The output projection's weight."""
        return f"{self.name}.out_proj.weight"

    def rows(self, which: str, head: int) -> tuple[slice, slice]:
        """Rows of head ``head`` of projection ``which`` in its weight, and in the packed bias."""
        offset = self.weight(which)[1]
        start, dh, bias_offset = head * self.head_dim, self.head_dim, "qkv".index(which) * self.embed_dim
        return slice(offset + start, offset + start + dh), slice(bias_offset + start, bias_offset + start + dh)

    def row_slots(self, space: ParamSpace, which: str, i: int) -> list[Slot]:
        """Row i of projection ``which`` with its bias entry appended."""
        pname, offset = self.weight(which)
        slots = [unit_slot(space, pname, 0, offset + i)]
        if self.bias:
            slots.append(unit_slot(space, self.bias, 0, "qkv".index(which) * self.embed_dim + i))
        return slots


def head_laws(name: str, row, out_col, heads: int, dh: int, module_qk: str, module_vo: str,
              findings: Findings, tag: str) -> None:
    """Every entry a <= b of the per-head matrices Q Q^T - K K^T and V V^T - O^T O.

    ``row(which, i)`` gives the slots of row i of q, k or v; ``out_col(i)`` column i of O.
    """
    for h in range(heads):
        prefix = f"{tag} head {h}"
        for a in range(h * dh, (h + 1) * dh):
            for b in range(a, (h + 1) * dh):
                findings.laws.append(gram_law(f"{prefix}: ({QK})[{a},{b}]", row("q", a), row("q", b),
                                              row("k", a), row("k", b), family="attention", module=module_qk,
                                              head=h, matrix=QK, unit=(a, b)))
                findings.laws.append(gram_law(f"{prefix}: ({VO})[{a},{b}]", row("v", a), row("v", b),
                                              [out_col(a)], [out_col(b)], family="attention", module=module_vo,
                                              head=h, matrix=VO, unit=(a, b)))


def mha_laws(space: ParamSpace, name: str, m: nn.MultiheadAttention, findings: Findings) -> None:
    """Per-head laws of an ``nn.MultiheadAttention`` (Cor 3.9, 3.10), biases appended."""
    layout = MHALayout.of(name, m)
    head_laws(name, lambda w, i: layout.row_slots(space, w, i), lambda i: unit_slot(space, layout.out_weight, 1, i),
              layout.num_heads, layout.head_dim, name, name, findings, name)
    if layout.bias and m.bias_k is None:
        e = layout.embed_dim
        for i in range(e):
            findings.laws.append(coordinate_law(space, layout.bias, e + i, KEY_BIAS, family="zero-gradient",
                                                module=name))


def incoming_rows(space: ParamSpace, module: str, k: int) -> list[Slot]:
    """Unit k of a module's weight (row / output channel / gamma entry) and of its bias, when present."""
    return [unit_slot(space, f"{module}.{suffix}", 0, k) for suffix in ("weight", "bias")
            if f"{module}.{suffix}" in space.shapes]


def source_linear(graph: Graph, node) -> fx.Node | None:
    """The Linear module a tensor comes from, through reshapes, transposes and scalings.

    Shape arguments computed from the input (``x.view(B, T, H, dh)`` with ``B, T = x.shape[:2]``)
    are fine: only a second *tensor* argument stops the walk.
    """
    while isinstance(node, fx.Node):
        if node.op == "call_module" and isinstance(graph.module_of(node), nn.Linear):
            return node
        if not is_transparent(node) or any(_is_tensor(graph, a) for a in node.args[1:]):
            return None
        node = node.args[0]
    return None


def _is_tensor(graph: Graph, arg) -> bool:
    """An fx node producing a tensor (shape propagation recorded one), not an int or a size."""
    return isinstance(arg, fx.Node) and graph.shape(arg) is not None


def split_heads(graph: Graph, query: fx.Node, linear: fx.Node) -> int | None:
    """Heads from the shapes: the query reaches the matmul as (..., H, T, dh) from a Linear of E = H dh outputs.

    None when the shapes are unknown; 1 when the query keeps the Linear's rank (no split).
    """
    q_shape, l_shape = graph.shape(query), graph.shape(linear)
    if q_shape is None or l_shape is None:
        return None
    if len(q_shape) == len(l_shape):
        return 1
    e, dh = l_shape[-1], q_shape[-1]
    return e // dh if len(q_shape) == len(l_shape) + 1 and dh and e % dh == 0 else None


def _single_user_chain(node: fx.Node, stop, max_steps: int = 6) -> fx.Node | None:
    """Follow single users through transparent ops until ``stop(node)``; None when the chain branches."""
    for _ in range(max_steps):
        users = list(node.users)
        if len(users) != 1:
            return None
        node = users[0]
        if stop(node):
            return node
    return None


def owner_heads(graph: Graph, qualname: str) -> int:
    """The number of heads declared by the module owning ``qualname`` (1 when none says)."""
    parts = qualname.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        owner = graph.module.get_submodule(".".join(parts[:cut])) if cut else graph.module
        for attr in ("num_heads", "n_heads", "heads", "n_head", "nhead"):
            value = getattr(owner, attr, None)
            if isinstance(value, int) and value > 0:
                return value
    return 1


def handwritten_attention_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """Family ``attention`` for attention written with Linear modules q, k, v, o (eq. 18 with biases)."""
    for node in graph.nodes:
        if not is_matmul(node):
            continue
        lq, lk = source_linear(graph, node.args[0]), source_linear(graph, node.args[1])
        if lq is None or lk is None or lq is lk:
            continue
        soft = _single_user_chain(node, is_softmax)
        if soft is None:
            continue
        values = [u for u in soft.users if is_matmul(u) and u.args[0] is soft]
        if len(values) != 1:
            continue
        lv = source_linear(graph, values[0].args[1])
        lo = _single_user_chain(values[0], lambda n: n.op == "call_module" and isinstance(graph.module_of(n),
                                                                                           nn.Linear))
        if lv is None or lo is None:
            continue
        q, k, v, o = (n.target for n in (lq, lk, lv, lo))
        d1 = graph.module_of(lq).out_features
        heads = split_heads(graph, node.args[0], lq) or owner_heads(graph, q)
        if d1 % heads or graph.module_of(lk).out_features != d1 or graph.module_of(lv).out_features != d1:
            findings.notes.append(f"attention {q}, {k}, {v}, {o}: shapes do not split into {heads} heads; skipped")
            continue
        names = {"q": q, "k": k, "v": v}
        head_laws(q, lambda w, i, names=names: incoming_rows(space, names[w], i),
                  lambda i, o=o: unit_slot(space, f"{o}.weight", 1, i),
                  heads, d1 // heads, q, v, findings, f"{q}/{k}/{v}/{o}")
        if f"{k}.bias" in space.shapes:
            for i in range(d1):
                findings.laws.append(coordinate_law(space, f"{k}.bias", i, KEY_BIAS, family="zero-gradient",
                                                    module=k))

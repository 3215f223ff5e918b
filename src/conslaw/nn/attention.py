"""Family ``attention``: per head, Q_h Q_h^T - K_h K_h^T and V_h V_h^T - O_h^T O_h (eq. 18/19, Cor 3.9, 3.10).

Biases are appended as an extra column of Q, K, V (eq. 18 with biases); the key
bias has zero gradient (softmax ignores a shift shared by all keys). Two forms
are recognized:

- ``nn.MultiheadAttention`` (packed ``in_proj_weight`` or separate q/k/v
  weights): :class:`MHALayout` is the one place that layout is decoded;
- attention read from the graph (:func:`handwritten_attention_laws`): every site
  softmax(q k^T) v of :mod:`conslaw.nn.sites`, whatever splits the heads (``view``,
  ``reshape``, ``unflatten``, ``split``, ``chunk``, ``unbind``, ``einsum``,
  ``scaled_dot_product_attention``), with q, k, v from separate or fused projections
  (``nn.Linear`` or GPT-2's ``Conv1D``). The heads are the feature groups that meet in
  the scores (no ``num_heads`` attribute is read); the output projection's columns of each
  head are found by running the reshapes after the attention on id tags.

Shared keys (grouped-query / multi-query attention, each key/value head read by G query
heads): the symmetry is Q_h -> A Q_h for every h of the group and K -> A^{-T} K, so the
laws are the entries of sum_h Q_h Q_h^T - K K^T, dh(dh+1)/2 per key head (not per query
head); likewise V V^T - sum_h O_h^T O_h per value head.

Rotary position embeddings (RoPE): the score is q_t^T R_{s-t} k_s with R a block-diagonal
of 2 x 2 rotations (feature i with i + dh/2) at distinct frequencies. Only A commuting
with every R_phi survive: per pair a I + b J. The law of a generator M is
<M, Q Q^T - K K^T>, zero for the antisymmetric J, so one law per rotary pair remains:
|q_i|^2 + |q_i'|^2 - |k_i|^2 - |k_i'|^2 (summed over the query heads of a shared key),
dh/2 per key head. V V^T - O^T O is untouched by RoPE; the key bias law is gone (the
rotation makes the shift depend on the key's position).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..laws import Slot, coordinate_law, gram_law, unit_slot
from ..laws.gram_block import gram_matrix_laws
from ..params import ParamSpace
from .findings import Findings
from .projections import Projection, projection
from .sites import Instance, Site, attention_sites
from .tags import data_args, is_identity, is_movement, try_evaluate
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
        prefix, units = f"{tag} head {h}", range(h * dh, (h + 1) * dh)
        findings.laws += gram_matrix_laws(lambda a, b, p=prefix: f"{p}: ({QK})[{a},{b}]",
                                          [row("q", a) for a in units], [row("k", a) for a in units], units,
                                          family="attention", module=module_qk, head=h, matrix=QK)
        findings.laws += gram_matrix_laws(lambda a, b, p=prefix: f"{p}: ({VO})[{a},{b}]",
                                          [row("v", a) for a in units], [[out_col(a)] for a in units], units,
                                          family="attention", module=module_vo, head=h, matrix=VO)


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


def _forward_to_consumers(graph: Graph, space: ParamSpace, seeds: dict) -> dict[int, tuple[Projection, int]]:
    """Run the movement ops after the attention outputs on their id tags, up to the projections that read them.

    Returns id -> (consumer projection, input column) for every id that reaches one column (None: several).
    """
    env = dict(seeds)
    found: dict[int, tuple[Projection, int]] = {}
    started = False
    for node in graph.nodes:
        started = started or node in env
        if not started or node in env:
            continue
        proj = projection(graph, space, node)
        if proj is not None and node.args and node.args[0] in env:
            x = env[node.args[0]]
            cols = x.reshape(-1, x.shape[-1])
            for c in range(cols.shape[1]):
                for i in torch.unique(cols[:, c]).tolist():
                    found[i] = (proj, c) if found.get(i, (proj, c)) == (proj, c) else None  # None: two columns
            continue
        ins = data_args(node)
        if not ins or not all(i in env for i in ins):
            continue
        if is_movement(node) or is_identity(graph, node):
            value = try_evaluate(graph, node, env)
            if value is not None:
                env[node] = value
    return found


def _instances(sites: list[Site]) -> tuple[list[Instance], dict, list]:
    """The distinct head instances of all sites, the output id seeds, and one value entry per output batch entry.

    Every batch entry e of every site's output gets ids e * stride + position + 1 (:func:`_ids`); a value
    entry is (value operand, value features, e, instance).
    """
    instances: list[Instance] = []
    index: dict = {}
    seeds: dict = {}
    values: list = []
    for s, site in enumerate(sites):
        cv = site.vvecs.shape[1]
        ids = torch.zeros(site.vvecs.shape, dtype=torch.long)
        for n in range(site.vvecs.shape[0]):
            qvec = () if site.qvecs is None else tuple(site.qvecs[n].tolist())
            kvec = () if site.kvecs is None else tuple(site.kvecs[n].tolist())
            key = (s, qvec, kvec, tuple(site.vvecs[n].tolist()))
            if key not in index:
                index[key] = len(instances)
                instances.append(Instance(s, site.q, site.k, site.v, *key[1:]))
            ids[n] = _ids(len(values), cv)
            values.append((site.v, key[3], len(values), instances[index[key]]))
        seeds[site.out] = site.output(ids)
    return instances, seeds, values


def _ids(u: int, cv: int, stride: int = 1 << 20) -> torch.Tensor:
    """Output ids of instance u: u * stride + position + 1."""
    return u * stride + torch.arange(cv) + 1


def handwritten_attention_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """Family ``attention`` for attention read from the graph (:mod:`conslaw.nn.sites`), eq. 18/19 with biases.

    Per key head (a group of query heads sharing it: grouped-query attention), with the query
    heads h of the group and key features b_i: sum_h Q_h Q_h^T - K K^T (Cor 3.9, 3.10; the
    shared-key symmetry Q_h -> A Q_h for every h, K -> A^{-T} K). Under rotary embeddings only
    the A commuting with every rotation survive (2 x 2 blocks a I + b J per rotary pair); the
    symmetric ones, A = identity on one pair, give one law per pair: the pair's trace
    |q_i|^2 + |q_i'|^2 - |k_i|^2 - |k_i'|^2 summed over the group.
    Per value head (shared or not), with the output-projection columns c_{h,i} that read its
    feature i through query head h: V V^T - sum_h O_h^T O_h. Key biases (without rotary
    embeddings) have zero gradient.
    """
    sites, notes = attention_sites(graph, space)
    findings.notes += notes
    if not sites:
        return
    instances, seeds, values = _instances(sites)
    _check_config_heads(graph, instances, findings)
    columns = _forward_to_consumers(graph, space, seeds)
    _qk_laws(space, instances, findings)
    _vo_laws(space, values, columns, findings)
    seen: set = set()
    for inst in instances:
        if inst.q is None or inst.k is None:
            continue
        k = inst.k.proj
        if k.bias is None or inst.k.rope is not None or inst.q.rope is not None:
            continue
        for f in inst.kvec:
            if (k.bias, f) not in seen:
                seen.add((k.bias, f))
                findings.laws.append(coordinate_law(space, k.bias, f, KEY_BIAS, family="zero-gradient",
                                                    module=k.module))


def _check_config_heads(graph: Graph, instances: list[Instance], findings: Findings) -> None:
    """Warn when the query heads read from the graph differ from the model config's ``num_attention_heads``."""
    config = getattr(graph.module, "config", None)
    want = getattr(config, "num_attention_heads", None) if config is not None else None
    if not isinstance(want, int):
        return
    heads: dict[str, set] = {}
    for inst in instances:
        if inst.q is not None:
            heads.setdefault(inst.q.proj.module, set()).add(inst.qvec)
    for module, found in heads.items():
        if len(found) != want:
            findings.warnings.append(f"attention {module}: {len(found)} query heads read from the graph, but "
                                     f"config.num_attention_heads = {want}")


def _tag(*ops) -> str:
    """``q/k/v`` module names of the operands that are known (Operand or Projection)."""
    projs = [getattr(op, "proj", op) for op in ops if op is not None]
    return "/".join(dict.fromkeys(p.module for p in projs))


def _qk_laws(space: ParamSpace, instances: list[Instance], findings: Findings) -> None:
    groups: dict = {}
    for inst in instances:
        if inst.q is None or inst.k is None:
            continue
        group = groups.setdefault((inst.k.proj.module, inst.kvec), {})
        group.setdefault((inst.q.proj.module, inst.qvec), inst)
    owner: dict = {}
    for key, group in groups.items():
        for q_module, qvec in group:
            for f in qvec:
                owner.setdefault((q_module, f), set()).add(key)
    for h, group in enumerate(groups.values()):
        heads = list(group.values())
        first = heads[0]
        if any(len(owner[(i.q.proj.module, f)]) > 1 for i in heads for f in i.qvec):
            findings.notes.append(f"attention {_tag(first.q, first.k)}: a query feature meets two key "
                                  "heads; no Q Q^T - K K^T law named there")
            continue
        _group_qk_laws(space, h, heads, findings)


def _group_qk_laws(space: ParamSpace, h: int, heads: list[Instance], findings: Findings) -> None:
    """The Q Q^T - K K^T laws of one key head and the query heads that share it (rotary: pair traces)."""
    first = heads[0]
    tag = _tag(first.q, first.k, first.v)
    shared = f" (shared by {len(heads)} query heads)" if len(heads) > 1 else ""
    matrix = QK if len(heads) == 1 else "sum_h Q_h Q_h^T - K K^T"
    c = len(first.kvec)

    def q_rows(i: int) -> list[Slot]:
        return [s for inst in heads for s in inst.q.proj.rows(space, inst.qvec[i])]

    def k_rows(i: int) -> list[Slot]:
        return first.k.proj.rows(space, first.kvec[i])

    ropes = {inst.q.rope is None for inst in heads} | {first.k.rope is None}
    if ropes == {True}:
        findings.laws += gram_matrix_laws(lambda a, b: f"{tag} head {h}{shared}: ({matrix})[{a},{b}]",
                                          [q_rows(i) for i in range(c)], [k_rows(i) for i in range(c)],
                                          first.qvec, family="attention", module=first.q.proj.module, head=h,
                                          matrix=matrix)
        return
    pairs = _rotary_positions(heads, first)
    if pairs is None:
        findings.notes.append(f"attention {tag} head {h}: rotary embedding on only one side or with pairs that "
                              "differ between query and key; no Q Q^T - K K^T law named there")
        return
    for i, j in pairs:
        a, b = first.qvec[i], first.qvec[j]
        rows_q, rows_k = q_rows(i) + q_rows(j), k_rows(i) + k_rows(j)
        findings.laws.append(gram_law(f"{tag} head {h}{shared}: rotary pair ({a},{b}) trace of ({matrix})",
                                      rows_q, rows_q, rows_k, rows_k, family="attention (rotary)",
                                      module=first.q.proj.module, head=h, matrix=f"{matrix} (rotary pair trace)",
                                      unit=(a, b)))


def _rotary_positions(heads: list[Instance], first: Instance) -> list[tuple[int, int]] | None:
    """Contraction positions (i, i') rotated together, the same for every query head and the key; else None."""
    kpos = {f: i for i, f in enumerate(first.kvec)}
    if first.k.rope is None:
        return None
    pairs = {tuple(sorted((i, kpos[first.k.rope[f]]))) for i, f in enumerate(first.kvec) if first.k.rope.get(f) in kpos}
    if len(pairs) * 2 != len(first.kvec):
        return None
    for inst in heads:
        if inst.q.rope is None:
            return None
        qpos = {f: i for i, f in enumerate(inst.qvec)}
        got = {tuple(sorted((i, qpos.get(inst.q.rope.get(f), -1)))) for i, f in enumerate(inst.qvec)}
        if got != pairs:
            return None
    return sorted(pairs)


def _vo_laws(space: ParamSpace, values: list, columns: dict, findings: Findings) -> None:
    """V V^T - sum_h O_h^T O_h per value head; h runs over the distinct output columns its features reach."""
    groups: dict = {}
    for v, vvec, e, inst in values:
        groups.setdefault((v.proj.module, vvec), []).append((e, inst))
    for h, ((_, vvec), members) in enumerate(groups.items()):
        first = members[0][1]
        cv = len(vvec)
        heads: list[tuple] = []  # one tuple of (consumer, column) per query head (batch copies coincide)
        for e, _inst in members:
            cols = tuple(columns.get(int(i)) for i in _ids(e, cv))
            if cols not in heads:
                heads.append(cols)
        consumers = {c[0].module for cols in heads for c in cols if c is not None}
        tag = _tag(first.q, first.k, first.v)
        if any(c is None for cols in heads for c in cols) or len(consumers) != 1:
            findings.notes.append(f"attention {tag} value head {h}: its output does not reach one projection "
                                  "through reshapes alone; no V V^T - O^T O law named there")
            continue
        out = heads[0][0][0]
        tag = f"{tag}/{out.module}" if out.module not in tag.split("/") else tag
        shared = f" (shared by {len(heads)} query heads)" if len(heads) > 1 else ""
        matrix = VO if len(heads) == 1 else "V V^T - sum_h O_h^T O_h"
        findings.laws += gram_matrix_laws(
            lambda a, b, t=tag, h=h, s=shared, x=matrix: f"{t} head {h}{s}: ({x})[{a},{b}]",
            [first.v.proj.rows(space, a) for a in vvec], [[out.column(space, cols[i][1]) for cols in heads]
                                                          for i in range(cv)],
            vvec, family="attention", module=first.v.proj.module, head=h, matrix=matrix)

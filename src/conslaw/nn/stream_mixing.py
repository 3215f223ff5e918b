"""Laws of a residual stream that LayerNorms and linear maps read: x -> A x with A = c I + t 1 1^T.

A LayerNorm over the features of a token removes any shift shared by those
features and (at eps = 0) any positive scale: LN(c x + s 1) = LN(x). So on a
stream whose readers are LayerNorms and *linear* maps R (a Linear, the input
projections of an attention), the invertible maps A = c I + t 1 1^T can act:
every writer's output is multiplied by A (its rows: Linear W -> A W, b -> A b;
an embedding or a position table E -> E A^T) and every linear reader takes
A^{-1} (R -> R A^{-1}); the LayerNorms see c x + (t 1.x) 1, which they remove.
These are linear symmetries with symmetric generators, so (Noether, the
generator 1 1^T and I of the group):

- ``mixing (LayerNorm stream)`` (exact, also at eps > 0, since only shifts are added):
  sum_writers sum_units (1^T w_unit)^2 - sum_readers sum_rows (R_i . 1)^2
  (w_unit: a column or the bias of a Linear writer, a row of an embedding or position table);
- ``scale-invariance`` of the stream: sum_writers |w|^2 - sum_readers |R|^2, approximate
  (eps breaks the scale invariance of a LayerNorm), exact at eps = 0;
- ``translation (uniform shifts)``: writers that shift every token of the stream alike
  (biases; a whole embedding table, since each token reads exactly one row; a position
  table's rows when the reader averages over tokens) may trade a shift s 1 among
  themselves: with weights omega (1 for a bias, 1/T for one of T position rows read
  through a mean), sum(w) - (omega_w / omega_ref) sum(ref) is conserved (exact).

Where the built-in ``nn.TransformerEncoder`` classifiers have these laws:
post-LN: the input stream x = E[ids] + P is read by norm1 (through x + sa(x)) and by the
first layer's in_proj (q, k, v rows): the mixing law |E 1|^2 + |P 1|^2 - |W_in 1|^2;
pre-LN without a final norm: the whole residual stream (E, P, each layer's out_proj and
linear2) is read by the norms and by the head (through the mean over tokens): mixing,
scale and uniform-shift laws; with a final norm it is read only by LayerNorms: every
writer's unit shifts on its own (``translation (into LayerNorm)``) and the stream scales.
No paper equation: these extend the rescaling laws (Prop 3.5) to the group of maps that
commute with LayerNorm.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from ..laws import QuadraticLaw, Slot, balance_law, unit_slot
from ..params import DTYPE, ParamSpace
from .attention import MHALayout
from .embeddings import summands
from .findings import Findings
from .trace import Graph

MIXING = "mixing (LayerNorm stream)"
SHIFTS = "translation (uniform shifts)"
TRANSLATION = "translation (into LayerNorm)"


def square_sum_law(name: str, plus: list[Slot], minus: list[Slot], **structure) -> QuadraticLaw:
    """sum_plus (sum of the slot's entries)^2 - sum_minus (same)^2: all pairs of entries of each slot."""
    qi, qj, qc = [], [], []
    for sign, slots in ((1.0, plus), (-1.0, minus)):
        for s in slots:
            a = s.index.reshape(-1)
            qi.append(a.repeat_interleave(a.numel()))
            qj.append(a.repeat(a.numel()))
            qc.append(torch.full((a.numel() ** 2,), sign, dtype=DTYPE))
    formula = " + ".join(f"sum({s.text})^2" for s in plus) + "".join(f" - sum({s.text})^2" for s in minus)
    params = tuple(dict.fromkeys(s.name for s in plus + minus))
    return QuadraticLaw.from_tensors(name, formula, params, torch.cat(qi), torch.cat(qj), torch.cat(qc), **structure)


def weighted_linear_law(name: str, terms: list[tuple[float, Slot]], **structure) -> QuadraticLaw:
    """sum_terms coefficient * sum(slot entries)."""
    index = torch.cat([s.index.reshape(-1) for _, s in terms])
    coef = torch.cat([torch.full((s.index.numel(),), float(c), dtype=DTYPE) for c, s in terms])
    formula = " ".join(("+ " if c > 0 else "- ") + (f"{abs(c):g} " if abs(c) != 1 else "") + f"sum({s.text})"
                       for c, s in terms).removeprefix("+ ")
    empty = torch.zeros(0, dtype=torch.long)
    params = tuple(dict.fromkeys(s.name for _, s in terms))
    return QuadraticLaw.from_tensors(name, formula, params, empty, empty, torch.zeros(0, dtype=DTYPE), index, coef,
                                     **structure)


class Writer:
    """A writer of the stream: its units (rows of an embedding, columns and bias of a Linear) and whole slots."""

    def __init__(self, label: str, units: list[Slot], whole: list[Slot], uniform: list[tuple[float, Slot]]):
        self.label, self.units, self.whole, self.uniform = label, units, whole, uniform


def table_writer(space: ParamSpace, name: str, per_row_weight: float | None) -> Writer:
    """An embedding / position table (rows = tokens or positions, columns = features).

    ``per_row_weight``: each row shifts the averaged stream by that weight (position rows read through a
    mean over T tokens: 1/T); None: only the whole table shifts every token alike (weight 1).
    """
    rows = space.shapes[name][0]
    units = [unit_slot(space, name, 0, r) for r in range(rows)]
    whole = [unit_slot(space, name, 0, slice(0, rows))]
    uniform = [(per_row_weight, u) for u in units] if per_row_weight is not None else [(1.0, whole[0])]
    return Writer(name, units, whole, uniform)


def linear_writer(space: ParamSpace, module: str) -> Writer | None:
    """A Linear writer W x + b: its columns, its bias (which shifts every token alike)."""
    weight, bias = f"{module}.weight", f"{module}.bias"
    if weight not in space.shapes:
        return None
    out, cols = space.shapes[weight]
    units = [unit_slot(space, weight, 1, j) for j in range(cols)]
    whole = [unit_slot(space, weight, 0, slice(0, out))]
    uniform = []
    if bias in space.shapes:
        b = unit_slot(space, bias, 0, slice(0, out))
        units.append(b)
        whole.append(b)
        uniform.append((1.0, b))
    return Writer(module, units, whole, uniform)


def input_writers(graph: Graph, node: fx.Node, space: ParamSpace, mean_reader: bool) -> list[Writer] | None:
    """The writers of an encoder's input: E[ids] + P or E[ids] alone (None: something else)."""
    pair = summands(graph, node, space)
    if pair is not None:
        emb, pos = pair
        if space.shapes[pos.target][-1] != graph.module_of(emb).embedding_dim or len(space.shapes[pos.target]) != 2:
            return None
        rows = space.shapes[pos.target][0]
        embedding = table_writer(space, f"{emb.target}.weight", None)
        embedding.uniform = []  # shifting all of E = shifting all of P: already a summed-embedding law
        return [embedding, table_writer(space, pos.target, 1.0 / rows if mean_reader else None)]
    if node.op == "call_module" and isinstance(graph.module_of(node), nn.Embedding):
        return [table_writer(space, f"{node.target}.weight", None)]
    return None


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _is_token_mean(node: fx.Node) -> bool:
    """x.mean(dim=1) / torch.mean(x, 1) on a (batch, tokens, features) stream."""
    method = node.op == "call_method" and node.target == "mean"
    if method or (node.op == "call_function" and node.target is torch.mean):
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        return dim in (1, -2, (1,), [1]) and not node.kwargs.get("keepdim", False)
    return False


def linear_reader(graph: Graph, node: fx.Node) -> tuple[str, bool] | None:
    """(Linear module reading the encoder output, through a mean over tokens?) or None."""
    user = _only_user(node)
    mean = user is not None and _is_token_mean(user)
    if mean:
        user = _only_user(user)
    if user is None or user.op != "call_module" or not isinstance(graph.module_of(user), nn.Linear):
        return None
    return user.target, mean


def encoder_stream_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """The laws of the module docstring for every nn.TransformerEncoder(Layer) leaf of the graph."""
    for node in graph.nodes:
        m = graph.module_of(node) if node.op == "call_module" else None
        if isinstance(m, nn.TransformerEncoder):
            layers = [(f"{node.target}.layers.{i}", layer) for i, layer in enumerate(m.layers)]
            final = m.norm
        elif isinstance(m, nn.TransformerEncoderLayer):
            layers, final = [(node.target, m)], None
        else:
            continue
        source = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if source is None or _only_user(source) is not node:
            continue
        if all(layer.norm_first for _, layer in layers) and final is None:
            _pre_ln(graph, node, source, layers, space, findings)
        elif all(layer.norm_first for _, layer in layers) and isinstance(final, nn.LayerNorm):
            _pre_ln_final_norm(graph, node, source, layers, final, space, findings)
        elif not layers[0][1].norm_first:
            _post_ln_input(graph, source, layers[0], space, findings)


def _post_ln_input(graph: Graph, source: fx.Node, first: tuple[str, nn.TransformerEncoderLayer], space: ParamSpace,
                   findings: Findings) -> None:
    """Post-LN: the input stream is read by norm1 (through x + sa(x)) and by the first in_proj."""
    prefix, layer = first
    writers = input_writers(graph, source, space, mean_reader=False)
    attn = layer.self_attn
    if writers is None or not attn._qkv_same_embed_dim:
        return
    layout = MHALayout.of(f"{prefix}.self_attn", attn)
    weights = layout.input_weights()
    if not all(w in space.shapes for w in weights):
        return
    readers = [unit_slot(space, w, 0, i) for w in weights for i in range(space.shapes[w][0])]
    units = [u for w in writers for u in w.units]
    findings.laws.append(square_sum_law(f"{prefix} input stream mixing with 1 (read by {prefix}.norm1 and "
                                        f"{layout.name})", units, readers, family=MIXING, module=f"{prefix}.norm1"))


def _stream_writers(graph: Graph, source: fx.Node, layers: list, space: ParamSpace,
                    mean_reader: bool) -> list[Writer] | None:
    """E (and P) at the input, then every layer's out_proj and linear2 (None when one is missing)."""
    writers = input_writers(graph, source, space, mean_reader=mean_reader)
    if writers is None:
        return None
    for prefix, _ in layers:
        for module in (f"{prefix}.self_attn.out_proj", f"{prefix}.linear2"):
            w = linear_writer(space, module)
            if w is None:
                return None
            writers.append(w)
    return writers


def _pre_ln_final_norm(graph: Graph, node: fx.Node, source: fx.Node, layers: list, final: nn.LayerNorm,
                       space: ParamSpace, findings: Findings) -> None:
    """Pre-LN with a final norm: the residual stream is read only by LayerNorms. Every unit of every writer
    (a row of E or P, a column or the bias of out_proj and linear2) may shift on its own (exact), and the
    stream may scale (approximate)."""
    writers = _stream_writers(graph, source, layers, space, mean_reader=False)
    if writers is None or tuple(final.normalized_shape) != (space.shapes[writers[0].label][-1],):
        return
    norms = ", ".join([f"{p}.norm1, {p}.norm2" for p, _ in layers] + [f"{node.target}.norm"])
    for w in writers:
        for unit in w.units:
            findings.laws.append(weighted_linear_law(f"{unit.text} (shift removed by {norms})", [(1.0, unit)],
                                                     family=TRANSLATION, module=w.label.removesuffix(".weight")))
    findings.laws.append(balance_law(f"{node.target} residual stream (read by {norms}): scale",
                                     [s for w in writers for s in w.whole], [], family="scale-invariance",
                                     module=str(node.target), approximate_cause=(
                                         f"LayerNorm eps={final.eps:g}: scale invariant only up to "
                                         "O(eps / variance)")))


def _pre_ln(graph: Graph, node: fx.Node, source: fx.Node, layers: list, space: ParamSpace,
            findings: Findings) -> None:
    """Pre-LN without a final norm: the residual stream is read by every norm and by one Linear (the head)."""
    reader = linear_reader(graph, node)
    if reader is None:
        return
    head, mean = reader
    writers = _stream_writers(graph, source, layers, space, mean_reader=mean)
    if writers is None:
        return
    head_weight = f"{head}.weight"
    rows = space.shapes[head_weight][0]
    readers = [unit_slot(space, head_weight, 0, i) for i in range(rows)]
    norms = ", ".join(f"{p}.norm1, {p}.norm2" for p, _ in layers)
    stream = f"{node.target} residual stream (read by {norms} and {head})"
    findings.laws.append(square_sum_law(f"{stream}: mixing with 1", [u for w in writers for u in w.units], readers,
                                        family=MIXING, module=str(node.target)))
    eps = max(layer.norm1.eps for _, layer in layers)
    findings.laws.append(balance_law(f"{stream}: scale", [s for w in writers for s in w.whole],
                                     [unit_slot(space, head_weight, 0, slice(0, rows))], family="scale-invariance",
                                     module=str(node.target), approximate_cause=(
                                         f"LayerNorm eps={eps:g}: scale invariant only up to O(eps / variance)")))
    uniform = [t for w in writers for t in w.uniform]
    ref_weight, ref = next((t for t in uniform if t[1].name.endswith(".bias")), uniform[0])
    for weight, slot in uniform:
        if slot is ref:
            continue
        findings.laws.append(weighted_linear_law(f"{stream}: shift {slot.text} against {ref.text}",
                                                 [(1.0, slot), (-weight / ref_weight, ref)], family=SHIFTS,
                                                 module=str(node.target)))

"""Attention laws do not depend on how a model splits its heads, fuses its projections, shares keys or rotates.

Counts are the paper's (eq. 18/19, Cor 3.9/3.10: per head dh(dh+1)/2 entries of Q Q^T - K K^T and as
many of V V^T - O^T O) or derived here for shared keys and rotary embeddings, and the numeric Lie engine
(the loss-gradient fields, no graph) gives the same number on every tiny config.
"""

import pytest
import torch

from conslaw.models import seeded
from conslaw.models.attention import SPLITS, MiniAttention
from conslaw.nn import find_laws


def per_head(dh: int) -> int:
    """Entries a <= b of a dh x dh symmetric matrix: dh(dh+1)/2 (Cor 3.9 counts two such matrices per head)."""
    return dh * (dh + 1) // 2


def attention_count(heads: int, dh: int, kv_heads: int | None = None, rope: bool = False) -> int:
    """Named attention laws: per key/value head, Q Q^T - K K^T (dh/2 pair traces under RoPE) and V V^T - O^T O.

    With kv_heads = heads and no RoPE this is heads * dh (dh + 1), eq. 19 per head.
    """
    groups = heads if kv_heads is None else kv_heads
    return groups * ((dh // 2 if rope else per_head(dh)) + per_head(dh))


def attention(split="view", bias=False, fused=False, **kw):
    return seeded(lambda: MiniAttention(split=split, bias=bias, fused=fused, **kw), 0)


X = torch.randn(4, 4, 4, generator=torch.Generator().manual_seed(1))


def families(result):
    out = {}
    for c in result.laws:
        out[(c.family, c.status)] = out.get((c.family, c.status), 0) + 1
    return out


@pytest.mark.parametrize("fused", [False, True])
def test_every_head_split_and_front_end_names_the_same_laws(fused):
    formulas = {}
    for split in SPLITS:
        for front_end in ("fx", "export"):
            result = find_laws(attention(split, bias=True, fused=fused), X, "mse", numeric=False,
                               front_end=front_end, batches=2)
            counts = families(result)
            assert counts[("attention", "exact")] == attention_count(2, 2) == 12, (split, front_end)
            assert counts[("zero-gradient", "exact")] == 4  # the key bias: softmax ignores a shift of every score
            assert result.named_laws == 16
            assert sum(n for (_, status), n in counts.items() if status != "exact") == 0
            formulas[(split, front_end)] = sorted(c.law.formula for c in result.laws)
    first = next(iter(formulas.values()))
    assert all(f == first for f in formulas.values())


@pytest.mark.parametrize("split,fused,bias", [("einsum", False, False), ("split", False, True), ("sdpa", True, True),
                                              ("chunk", False, False)])
def test_named_equals_the_numeric_engine(split, fused, bias):
    result = find_laws(attention(split, bias=bias, fused=fused), X, "mse", batches=2)
    expected = attention_count(2, 2) + (4 if bias else 0)  # 12 = H dh (dh + 1) for H = dh = 2 (eq. 19)
    assert (result.named_laws, result.lie_laws) == (expected, expected)


@pytest.mark.parametrize("heads,kv_heads,rope,dim", [(2, 1, False, 4), (2, 1, True, 4), (2, 2, True, 4),
                                                     (4, 2, False, 8), (4, 2, True, 8)])
def test_grouped_query_and_rotary_laws_equal_the_engine(heads, kv_heads, rope, dim):
    """Shared keys: sum_h Q_h Q_h^T - K K^T per key head; RoPE: only the pair traces of it survive."""
    x = torch.randn(4, 4, dim, generator=torch.Generator().manual_seed(2))
    dh = dim // heads
    expected = attention_count(heads, dh, kv_heads, rope)
    for split, front_end in (("view", "fx"), ("sdpa", "export")):
        model = attention(split, heads=heads, kv_heads=kv_heads, rope=rope, dim=dim)
        result = find_laws(model, x, "mse", numeric=front_end == "fx", front_end=front_end, batches=2)
        assert result.named_laws == expected, (split, front_end)
        if front_end == "fx":
            assert result.lie_laws == expected
        rotary = result.select(family="attention (rotary)")
        assert len(rotary) == (kv_heads * dh // 2 if rope else 0)
        if rope:
            law = rotary[0].law
            # the trace of one rotary pair (features i and i + dh/2), summed over the query heads sharing the key
            assert law.formula.count("q.weight") == 2 * heads // kv_heads and law.formula.count("k.weight") == 2


def test_softmax_asked_for_float32_stays_float64_in_the_analysis():
    """Hugging Face eager attention: softmax(scores, -1, dtype=torch.float32); the analysis keeps float64."""
    from conslaw.fields.model_io import keep_float64

    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 10
    with keep_float64():
        y = torch.nn.functional.softmax(x, dim=-1, dtype=torch.float32)
    assert y.dtype == torch.float64
    assert torch.allclose(y, torch.softmax(x, -1), rtol=0, atol=1e-16)


def test_multihead_attention_read_from_the_aten_graph_equals_its_handler():
    """nn.MultiheadAttention without its handler, through torch.export: F.linear of in_proj_weight, chunks,
    SDPA, F.linear of out_proj: the same laws as the handler's decoding of the packed layout (MHALayout)."""
    from conslaw.nn import HandlerRegistry

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = torch.nn.MultiheadAttention(4, 2, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    model = seeded(Block, 0)
    by_handler = find_laws(model, X, "mse", batches=2)
    from_graph = find_laws(model, X, "mse", batches=2, handlers=HandlerRegistry({}), front_end="export")
    for result in (by_handler, from_graph):
        assert (result.named_laws, result.lie_laws) == (16, 16)  # 2 heads x (3 + 3) + 4 key-bias entries
    assert sorted(c.law.formula for c in by_handler.laws) == sorted(c.law.formula for c in from_graph.laws)


class TanhQuery(MiniAttention):
    """MiniAttention with tanh on the queries: Q -> A Q is no symmetry any more, V/O still is."""

    def forward(self, x):
        B, T, E = x.shape
        H = self.n_head
        q, k, v = (y.view(B, T, H, E // H).transpose(1, 2) for y in (torch.tanh(self.q(x)), self.k(x), self.v(x)))
        return self.o((torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v).transpose(1, 2).reshape(B, T, E))


def test_untraced_query_keeps_the_value_output_laws_and_says_so():
    model = seeded(lambda: TanhQuery(split="view"), 0)
    result = find_laws(model, X, "mse", batches=2)
    assert len(result.select(family="attention", matrix="V V^T - O^T O")) == 2 * per_head(2)
    assert not result.select(family="attention", matrix="Q Q^T - K K^T")
    assert any("only its V V^T - O^T O laws are named" in n for n in result.notes)
    assert (result.named_laws, result.lie_laws) == (6, 6)

"""Matrix laws held as blocks (conslaw.laws.gram_block / gram_rank) against their explicit entries.

The references are independent of the block code: explicit gram_law entries (index lists), dense gradients
stacked and ranked by one dense SVD, and law_residual law by law.
"""

import numpy as np
import pytest
import torch

from conslaw.laws import gram_law, law_residual, linear_law, unit_slot
from conslaw.laws.gram_block import GramEntryLaw, gram_matrix_laws
from conslaw.laws.gram_rank import LawRanks, block_rank
from conslaw.laws.verify import batched_residuals
from conslaw.params import DTYPE, ParamSpace
from conslaw.rank import numerical_rank


def _space(c: int = 4, n: int = 3) -> ParamSpace:
    # q: (c, n) weight + (c,) bias; k likewise; v: (c, n); o: (n, c) (its columns pair with v's rows)
    return ParamSpace({"q.weight": (c, n), "q.bias": (c,), "k.weight": (c, n), "k.bias": (c,), "o.weight": (n, c),
                       "v.weight": (c, n), "other": (5,)})


def _rows(space, name, c):
    return [[unit_slot(space, f"{name}.weight", 0, a), unit_slot(space, f"{name}.bias", 0, a)] for a in range(c)]


def _qk(space, c=4, labels=None):
    labels = list(range(c)) if labels is None else labels
    return gram_matrix_laws(lambda a, b: f"QK[{a},{b}]", _rows(space, "q", c), _rows(space, "k", c), labels,
                            family="attention", module="q", head=0, matrix="Q Q^T - K K^T")


def _explicit(space, c=4):
    q, k = _rows(space, "q", c), _rows(space, "k", c)
    return [gram_law(f"QK[{a},{b}]", q[a], q[b], k[a], k[b], unit=(a, b)) for a in range(c) for b in range(a, c)]


def _theta(space, seed=0):
    return torch.randn(space.D, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def test_entries_equal_the_explicit_laws():
    space = _space()
    blocks, explicit = _qk(space), _explicit(space)
    assert all(isinstance(law, GramEntryLaw) for law in blocks) and len(blocks) == 10
    theta = _theta(space)
    for law, ref in zip(blocks, explicit, strict=True):
        assert law.name == ref.name and law.formula == ref.formula and law.unit == ref.unit
        assert torch.allclose(law.value(theta), ref.value(theta), rtol=0, atol=1e-13)
        assert torch.allclose(law.grad(theta), ref.grad(theta), rtol=0, atol=1e-13)
        assert torch.allclose(law.grad(theta), law.autograd(theta), rtol=0, atol=1e-13)
        support, g = law.sparse_grad(theta)
        dense = torch.zeros(space.D, dtype=DTYPE).index_put_((support,), g)
        assert torch.equal(dense, ref.grad(theta))
        # the terms read back from the block give the same polynomial as the explicit law's
        qi, qj, qc = law.quad
        assert float((qc * theta[qi] * theta[qj]).sum()) == pytest.approx(float(ref.value(theta)), abs=1e-13)
    assert blocks[1].family == "attention" and blocks[1].head == 0 and blocks[1].matrix == "Q Q^T - K K^T"


def test_rows_that_repeat_a_coordinate_fall_back_to_explicit_laws():
    space = _space()
    q = _rows(space, "q", 2)
    laws = gram_matrix_laws(lambda a, b: f"x[{a},{b}]", q, q, [0, 1])  # L = R: every coordinate twice
    assert len(laws) == 3 and not any(isinstance(law, GramEntryLaw) for law in laws)


def test_block_residuals_equal_law_residual_entry_by_entry():
    space = _space()
    theta = _theta(space, 1)
    fields = torch.randn(3, space.D, generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    fields[0, space.slice("q.weight")] = 0.0  # a field with no share on part of the supports: the floor applies
    laws = [linear_law("sum other", [unit_slot(space, "other", 0, slice(0, 5))]), *_qk(space)]
    got = batched_residuals(laws, fields, theta)
    want = np.array([law_residual(law, fields, theta) for law in laws])
    assert np.allclose(got, want, rtol=1e-12, atol=1e-15)
    streamed = batched_residuals(laws, iter(fields), theta)
    assert np.allclose(streamed, want, rtol=1e-12, atol=1e-15)


def _dense_rank(laws, theta):
    rows = torch.stack([law.grad(theta) for law in laws])
    return numerical_rank(rows / rows.norm(dim=1, keepdim=True)).rank


def test_rank_of_blocks_with_plain_laws_equals_the_dense_rank():
    space = _space()
    theta = _theta(space, 3)
    entries = _qk(space)
    explicit = _explicit(space)
    q_rows, k_rows = _rows(space, "q", 4), _rows(space, "k", 4)
    trace = gram_law("trace", [s for r in q_rows for s in r], [s for r in q_rows for s in r],
                     [s for r in k_rows for s in r], [s for r in k_rows for s in r])  # in the block's span
    touching = [linear_law(f"q col {j}", [unit_slot(space, "q.weight", 1, j)]) for j in range(3)]
    key_bias = [linear_law(f"kb {a}", [unit_slot(space, "k.bias", 0, a)]) for a in range(4)]
    elsewhere = [linear_law("other", [unit_slot(space, "other", 0, slice(0, 3))])]
    for extra in ([], [trace], touching, key_bias, touching + key_bias + elsewhere + [trace]):
        laws = entries + extra
        want = _dense_rank(explicit + extra, theta)
        assert LawRanks(laws, theta, space.D).rank() == want, [law.name for law in extra]
    assert LawRanks([*entries, trace], theta, space.D).rank() == 10  # the trace adds nothing


def test_rank_deficient_block_and_partial_selection():
    # c = 4 rows of n = 1 coordinate (no bias): G = [L, -R] is 4 x 2, rank 2: 10 - 3 = 7 independent entries
    space = ParamSpace({"a": (4, 1), "b": (4, 1)})
    theta = _theta(space, 4)
    laws = gram_matrix_laws(lambda i, j: f"[{i},{j}]", [[unit_slot(space, "a", 0, i)] for i in range(4)],
                            [[unit_slot(space, "b", 0, i)] for i in range(4)], range(4))
    assert isinstance(laws[0], GramEntryLaw)
    assert block_rank(laws[0].block, theta) == 7 == _dense_rank(laws, theta)
    ranks = LawRanks(laws, theta, space.D)
    mask = np.zeros(len(laws), dtype=bool)
    mask[[0, 1, 4]] = True  # three entries only: ranked as explicit rows
    assert ranks.rank(mask) == _dense_rank([laws[k] for k in (0, 1, 4)], theta) == 3


def test_blocks_sharing_coordinates_are_ranked_explicitly():
    space = _space()
    theta = _theta(space, 5)
    first = _qk(space)
    again = _qk(space)  # the same matrix law named twice (two recognisers): spans coincide
    vo = gram_matrix_laws(lambda a, b: f"VO[{a},{b}]", [[unit_slot(space, "v.weight", 0, a)] for a in range(4)],
                          [[unit_slot(space, "o.weight", 1, a)] for a in range(4)], range(4))
    laws = first + again + vo
    assert LawRanks(laws, theta, space.D).rank() == _dense_rank(laws, theta) == 20


def test_a_repeated_entry_does_not_make_a_block_whole():
    # entries (0,0), (0,0), (0,1): (1,1) is missing, so the block must not be ranked as its full span (3)
    space = ParamSpace({"a": (2, 2), "b": (2, 1)})
    theta = _theta(space, 6)
    laws = gram_matrix_laws(lambda i, j: f"[{i},{j}]", [[unit_slot(space, "a", 0, i)] for i in range(2)],
                            [[unit_slot(space, "b", 0, i)] for i in range(2)], range(2))
    chosen = [laws[0], laws[0], laws[1]]
    assert LawRanks(chosen, theta, space.D).rank() == _dense_rank(chosen, theta) == 2

"""The find_laws pipeline at scale (issues 10 and 12): the vectorised, streamed verifier gives the per-law
residual of :func:`law_residual`, the CSR rank matrix gives the rank of the rows, and a group too wide to rank
is refused before any dense SVD is paid for."""

import numpy as np
import pytest
import torch
from torch import nn

import conslaw.laws.verify as verify
import conslaw.rank as rank_module
from conslaw.laws import QuadraticLaw, law_residual
from conslaw.nn import find_laws
from conslaw.nn.analysis import analyse
from conslaw.nn.find import collect, verification_draws, verification_points
from conslaw.nn.registry import HandlerRegistry
from conslaw.rank import GroupTooLarge, merge_private_columns, sparse_rank, sparse_rows


def _random_laws(D: int, n: int, seed: int) -> list[QuadraticLaw]:
    g = torch.Generator().manual_seed(seed)
    laws = []
    for k in range(n):
        m = int(torch.randint(1, 12, (1,), generator=g))
        qi, qj = torch.randint(0, D, (m,), generator=g), torch.randint(0, D, (m,), generator=g)
        lk = torch.randint(0, D, (2,), generator=g)
        laws.append(QuadraticLaw.from_tensors(f"h{k}", "random", (), qi, qj,
                                              torch.randn(m, generator=g, dtype=torch.float64),
                                              lk, torch.randn(2, generator=g, dtype=torch.float64)))
    laws.append(QuadraticLaw.from_tensors("zero", "0", (), torch.tensor([0]), torch.tensor([1]),
                                          torch.tensor([0.0], dtype=torch.float64)))  # zero gradient: residual 0
    return laws


def test_batched_residuals_equal_law_residual_stacked_and_streamed(monkeypatch):
    D = 300
    laws = _random_laws(D, 60, 0)
    theta = torch.randn(D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fields = torch.randn(5, D, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    fields[3, :150] = 0.0  # a field that vanishes on some supports: the share floor decides there
    reference = np.array([law_residual(law, fields, theta) for law in laws])
    assert reference[-1] == 0.0 and reference[:-1].min() > 1e-3  # random laws are far from conserved
    for chunk in (1, 7, 1 << 22):  # one law per chunk, a few, all
        got = verify.batched_residuals(laws, fields, theta, chunk_entries=chunk)
        np.testing.assert_allclose(got, reference, rtol=1e-12, atol=0)
    for rows_per_block in (1, 2, 5, 9):  # streamed fields, held in blocks of 1, 2 (+ a rest of 1), all
        monkeypatch.setattr(verify, "FIELD_BUFFER_BYTES", rows_per_block * D * 8)
        got = verify.batched_residuals(laws, iter(list(fields)), theta, chunk_entries=20)
        np.testing.assert_allclose(got, reference, rtol=1e-12, atol=0)


def test_sparse_rows_normalises_and_row_subsets_rank_as_their_rows():
    rng = np.random.default_rng(3)
    dense = rng.standard_normal((8, 40)) * (rng.random((8, 40)) < 0.3)
    dense[5] = 2 * dense[1] - dense[2]  # rank 7
    rows = [(torch.as_tensor(np.flatnonzero(r)), torch.as_tensor(r[np.flatnonzero(r)])) for r in dense]
    jac = sparse_rows(rows, 40)
    np.testing.assert_allclose(jac.toarray(), dense / np.linalg.norm(dense, axis=1, keepdims=True), rtol=1e-14)
    assert sparse_rank(jac, 40) == np.linalg.matrix_rank(dense) == 7
    subset = [0, 1, 2, 5]
    assert sparse_rank(jac[subset], 40) == np.linalg.matrix_rank(dense[subset]) == 3
    assert sparse_rank(jac[[]], 40) == 0 and sparse_rank([], 40) == 0


def test_private_columns_merge_into_one_per_row_with_the_same_gram_matrix():
    # summed-embedding-like rows: each owns a wide private block (a column of the token embedding) and shares a few
    # columns with the others; row 4 is a combination of rows 0 and 1 on the shared columns only (rank 5 of 6)
    rng = np.random.default_rng(5)
    dense = np.zeros((6, 6 * 200 + 12))
    for r in range(6):
        dense[r, 12 + 200 * r: 12 + 200 * (r + 1)] = rng.standard_normal(200)
        dense[r, :12] = rng.standard_normal(12) * (rng.random(12) < 0.6)
    dense[4] = 0.0
    dense[4, :12] = dense[0, :12] + dense[1, :12]
    dense[5, 12:] = 0.0  # a row with no private column keeps its shared columns only
    import scipy.sparse as sp

    merged = merge_private_columns(sp.csr_matrix(dense))
    touched = (dense != 0).sum(axis=0)
    owners = ((dense != 0) & (touched == 1)).any(axis=1)
    assert merged.shape[1] == np.count_nonzero(touched >= 2) + np.count_nonzero(owners) < 20
    np.testing.assert_allclose((merged @ merged.T).toarray(), dense @ dense.T, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(np.linalg.svd(merged.toarray(), compute_uv=False),
                               np.linalg.svd(dense, compute_uv=False), rtol=1e-12, atol=1e-12)
    rows = [(torch.as_tensor(np.flatnonzero(r)), torch.as_tensor(r[np.flatnonzero(r)])) for r in dense]
    # too wide for the dense block unless merged (6 x 1 212 > 6 x 40 doubles)
    assert sparse_rank(rows, dense.shape[1], max_dense_bytes=8 * 6 * 40) == np.linalg.matrix_rank(dense) == 6


def test_a_group_too_wide_is_refused_before_any_dense_svd(monkeypatch):
    # group 1: 3 rows on columns 0..9 (dense-able); group 2: 5 dense rows on columns 100..149 (too wide at the
    # limit set below, and more rows than the sketch takes once its disjoint row is taken out)
    rng = np.random.default_rng(4)
    rows = [(torch.arange(10), torch.as_tensor(rng.standard_normal(10))) for _ in range(3)]
    rows += [(torch.arange(100, 150), torch.as_tensor(rng.standard_normal(50))) for _ in range(5)]
    calls = []
    real_svd = np.linalg.svd
    monkeypatch.setattr(np.linalg, "svd", lambda *a, **k: calls.append(a[0].shape) or real_svd(*a, **k))
    monkeypatch.setattr(rank_module, "MAX_SKETCH_ROWS", 3)
    with pytest.raises(GroupTooLarge):
        sparse_rank(rows, 150, max_dense_bytes=8 * 3 * 10)
    assert calls == []
    monkeypatch.setattr(rank_module, "MAX_SKETCH_ROWS", 2048)
    assert sparse_rank(rows, 150, max_dense_bytes=8 * 3 * 10) == 3 + 5


@pytest.fixture(scope="module")
def wide_mlp():
    torch.manual_seed(0)
    # D = 400 * 501 + 10 * 401 = 204 410 > VMAP_MAX_D: fields are computed one at a time
    return nn.Sequential(nn.Linear(500, 400), nn.ReLU(), nn.Linear(400, 10)), torch.randn(4, 500)


def test_streamed_verification_of_a_large_model_matches_the_stacked_fields(wide_mlp):
    model, x = wide_mlp
    registry = HandlerRegistry.default()
    analysis = analyse(model, x, "mse", registry)
    assert analysis.space.D > 200_000
    laws = collect(analysis, "mse", registry).laws
    points = list(verification_points(analysis.fields, verification_draws(analysis.fields, analysis.theta, 3, 0), 3,
                                      show=False))
    assert all(not isinstance(rows, torch.Tensor) for _, rows in points)  # generators, one field at a time
    for theta, rows in points:
        rows = list(rows)
        stacked = torch.stack(rows)
        reference = np.array([law_residual(law, stacked, theta) for law in laws])
        np.testing.assert_allclose(verify.batched_residuals(laws, iter(rows), theta), reference, rtol=1e-9,
                                   atol=1e-14)  # exact laws: round-off, far below EXACT = 1e-10
    found = find_laws(model, x, "mse", numeric=False)
    assert found.named_laws == 400 and all(c.status == "exact" for c in found.laws)  # one rescaling law per unit


def test_a_difference_of_squared_norms_holds_one_index_tensor_and_the_same_gradient():
    a, b = torch.tensor([[0, 1], [2, 3]]), torch.tensor([4, 5, 6])
    shared = QuadraticLaw.inner_difference("h", "|a|^2 - |b|^2", (), [(a, a)], [(b, b)])
    copied = QuadraticLaw.inner_difference("h", "|a|^2 - |b|^2", (), [(a, a.clone())], [(b, b.clone())])
    assert shared.quad[1] is shared.quad[0] and copied.quad[1] is not copied.quad[0]
    theta = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    expected = torch.zeros(8, dtype=torch.float64)
    expected[:4], expected[4:7] = 2 * theta[:4], -2 * theta[4:7]  # grad (|a|^2 - |b|^2)
    for law in (shared, copied):
        support, g = law.sparse_grad(theta)
        assert support.tolist() == list(range(7))
        assert torch.equal(g, expected[:7]) and torch.equal(law.grad(theta), expected)
        assert float(law.value(theta)) == pytest.approx(float(theta[:4].square().sum() - theta[4:7].square().sum()))

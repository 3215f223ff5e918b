"""The one rank rule of the project: numerical rank with its spectral gap.

rank = number of singular values above ``rtol * reference`` (the largest
singular value unless the rows are already on a common scale); the gap
sigma_r / sigma_{r+1} says how clearly the rank is separated from round-off.
A small gap is a warning, never a silent answer (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

DEFAULT_RTOL = 1e-8
GAP_WARNING = 1e3


@dataclass(frozen=True)
class RankResult:
    """A numerical rank with the singular values on both sides of the threshold."""

    rank: int
    smallest_kept: float | None
    largest_dropped: float | None

    @property
    def gap(self) -> float | None:
        """sigma_r / sigma_{r+1}; None when nothing was kept or nothing nonzero dropped."""
        return spectral_gap(self.smallest_kept, self.largest_dropped)


def spectral_gap(smallest_kept: float | None, largest_dropped: float | None) -> float | None:
    """sigma_r / sigma_{r+1}, or None when one side is missing (no kept value, or exact zeros dropped)."""
    if smallest_kept is None or not largest_dropped:
        return None
    return smallest_kept / largest_dropped


def check_rtol(rtol: float) -> float:
    """``rtol`` when it is a usable relative threshold in (0, 1), else a clear error."""
    from .errors import ConslawError

    if not isinstance(rtol, int | float) or not 0.0 < float(rtol) < 1.0:
        raise ConslawError(f"rtol must be a number in (0, 1), got {rtol!r}", "use the default 1e-8")
    return float(rtol)


def rank_from_singular_values(sv: torch.Tensor | np.ndarray, rtol: float = DEFAULT_RTOL,
                              reference: float | None = None) -> RankResult:
    """The rank rule: how many of the (descending) singular values ``sv`` exceed ``rtol * reference``.

    Args:
        sv: singular values, largest first.
        rtol: relative threshold.
        reference: the scale the threshold is relative to; the largest singular value when None.
    """
    sv = np.asarray(sv.detach().cpu() if isinstance(sv, torch.Tensor) else sv, dtype=float)
    if sv.size == 0:
        return RankResult(0, None, None)
    ref = float(sv[0]) if reference is None else float(reference)
    if ref <= 0:
        return RankResult(0, None, float(sv[0]) or None)
    r = int((sv > rtol * ref).sum())
    kept = float(sv[r - 1]) if r else None
    dropped = float(sv[r]) if r < sv.size else None
    return RankResult(r, kept, dropped)


def numerical_rank(rows: torch.Tensor, rtol: float = DEFAULT_RTOL, normalize: bool = True) -> RankResult:
    """Rank of the span of the rows of ``rows`` (k x D).

    With ``normalize`` every nonzero row is scaled to unit norm first, so the
    threshold is relative to the vectors themselves, not to their lengths.

    Args:
        rows: a (k, D) tensor.
        rtol: relative threshold of :func:`rank_from_singular_values`.
        normalize: scale the rows to unit norm first.
    """
    if rows.numel() == 0:
        return RankResult(0, None, None)
    if normalize:
        norms = rows.norm(dim=1, keepdim=True)
        rows = torch.where(norms > 0, rows / norms.clamp_min(1e-300), rows)
    return rank_from_singular_values(torch.linalg.svdvals(rows), rtol)


class GroupTooLarge(Exception):
    """A group of rows sharing coordinates is too large for its dense SVD (see :func:`sparse_rank`)."""


def sparse_rows(rows: Sequence[tuple[torch.Tensor, torch.Tensor]], D: int) -> sp.csr_matrix:
    """The (k, D) CSR matrix of sparse rows (support indices, values), each scaled to unit norm.

    Written straight into preallocated CSR arrays (no coordinate-format copy): the
    memory is the matrix itself, 12 bytes an entry.

    Args:
        rows: per row, (support: long tensor of column indices, values on them).
        D: number of columns.
    """
    lengths = np.fromiter((support.numel() for support, _ in rows), dtype=np.int64, count=len(rows))
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    index_dtype = np.int32 if max(D, int(indptr[-1])) < np.iinfo(np.int32).max else np.int64
    indices = np.empty(int(indptr[-1]), dtype=index_dtype)
    data = np.empty(int(indptr[-1]))
    for r, (support, g) in enumerate(rows):
        indices[indptr[r]:indptr[r + 1]] = support.numpy()
        data[indptr[r]:indptr[r + 1]] = (g / g.norm().clamp_min(1e-300)).numpy()
    jac = sp.csr_matrix((data, indices, indptr.astype(index_dtype)), shape=(len(rows), D))
    jac.sum_duplicates()
    return jac


def sparse_rank(rows: Sequence[tuple[torch.Tensor, torch.Tensor]] | sp.csr_matrix, D: int,
                rtol: float = DEFAULT_RTOL, max_dense_bytes: float = 2**30) -> int:
    """Rank of sparse rows (support indices, values), one small dense SVD per group of rows sharing coordinates.

    Rows are normalized first. Rows that share no coordinate are independent
    blocks of the matrix, so the rank is the sum over the connected components
    of the row-overlap graph: laws that touch disjoint parameters never meet in one SVD.
    Groups too wide for a dense block go first (:func:`wide_group_rank`), so that
    a :class:`GroupTooLarge` comes before any expensive dense SVD.

    Args:
        rows: per row, (support: long tensor of column indices, values on them); or the matrix of
            :func:`sparse_rows` (unit-norm rows), e.g. a row subset of one built for more rows.
        D: number of columns.
        rtol: relative threshold of :func:`rank_from_singular_values`.
        max_dense_bytes: raise :class:`GroupTooLarge` rather than build a larger dense block.
    """
    jac = rows if sp.issparse(rows) else sparse_rows(rows, D) if len(rows) else None
    if jac is None or not jac.shape[0]:
        return 0
    jac = used_columns(jac)
    n_groups, labels = connected_components((jac @ jac.T) != 0, directed=False)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_groups + 1))
    total, dense_groups = 0, []
    for group in range(n_groups):
        idx = order[bounds[group]:bounds[group + 1]]
        if idx.size == 1:
            total += int(jac[idx[0]].count_nonzero() > 0)
            continue
        sub = merge_private_columns(jac[idx])
        if 8.0 * idx.size * sub.shape[1] <= max_dense_bytes:
            dense_groups.append(sub)  # sparse until its SVD: the wide groups are ranked first
            continue
        total += wide_group_rank(sub, rtol, max_dense_bytes)
    for sub in dense_groups:
        dense = sub.toarray()
        total += rank_from_singular_values(np.linalg.svd(dense, compute_uv=False), rtol).rank
        del dense
    return total


def used_columns(rows: sp.csr_matrix) -> sp.csr_matrix:
    """The same rows on the columns they use only (renumbered in order): the products ``rows @ rows.T`` then
    never build index arrays of the full width (D + 1 integers for a 100M-parameter model's transposes)."""
    if rows.shape[1] <= 2 * rows.nnz + 1024:
        return rows
    used, inverse = np.unique(rows.indices, return_inverse=True)
    return sp.csr_matrix((rows.data, inverse.reshape(-1), rows.indptr), shape=(rows.shape[0], used.size))


def merge_private_columns(rows: sp.csr_matrix) -> sp.csr_matrix:
    """The same rows with the same Gram matrix rows @ rows.T (so the same singular values) on fewer columns.

    A column that only one row touches adds to that row's squared norm and to no inner product, so all of a
    row's private columns can be replaced by one column holding the norm of its entries there. Columns no row
    touches are dropped. The summed-embedding laws of a language model (a column of the token embedding each,
    16 384 private entries) shrink to one column apiece.
    """
    m = rows.shape[0]
    row_of = np.repeat(np.arange(m), np.diff(rows.indptr))
    counts = np.bincount(rows.indices, minlength=rows.shape[1])
    private = counts[rows.indices] == 1
    keep = ~private
    used, inverse = np.unique(rows.indices[keep], return_inverse=True)
    norms = np.sqrt(np.bincount(row_of[private], weights=rows.data[private] ** 2, minlength=m))
    owners = np.flatnonzero(norms)
    out_rows = np.concatenate([row_of[keep], owners])
    out_cols = np.concatenate([inverse, used.size + np.arange(owners.size)])
    out_data = np.concatenate([rows.data[keep], norms[owners]])
    return sp.csr_matrix((out_data, (out_rows, out_cols)), shape=(m, used.size + owners.size))


def wide_group_rank(rows: sp.csr_matrix, rtol: float, max_dense_bytes: float) -> int:
    """Rank of unit-norm sparse rows too wide for one dense block (a connected group of :func:`sparse_rank`).

    A greedy set S of rows with pairwise disjoint supports (fewest entries
    first) is orthonormal, so rank = |S| + rank(R - R S^T S) for the other rows
    R: the projection is exact and sparse. What is left (e.g. 384 rescaling
    laws of a conv stack once its 16 385 softmax-translation laws are taken
    out) is ranked densely, or through :func:`column_sketch` when still too
    wide, against the rows' unit scale. Raises :class:`GroupTooLarge` when the
    rest still has more than ``MAX_SKETCH_ROWS`` rows.
    """
    taken = np.zeros(rows.shape[1], dtype=bool)
    disjoint = []
    for r in np.argsort(np.diff(rows.indptr), kind="stable"):
        cols = rows.indices[rows.indptr[r]:rows.indptr[r + 1]]
        if cols.size and not taken[cols].any():
            taken[cols] = True
            disjoint.append(r)
    rest = np.setdiff1d(np.arange(rows.shape[0]), disjoint)
    if not rest.size:
        return len(disjoint)
    if rest.size > MAX_SKETCH_ROWS:
        raise GroupTooLarge(f"{rest.size} rows sharing coordinates after removing {len(disjoint)} disjoint ones")
    s, others = rows[disjoint], rows[rest]
    # the projection's entries, bounded before it is formed: each row gains the support of every disjoint row
    # it meets (the BatchNorm laws of a ResNet-18 would have filled tens of GB)
    meets = (abs(others) @ abs(s).T).tocsr()
    meets.data[:] = 1.0
    entries = float((meets @ np.diff(s.indptr).astype(float)).sum()) + others.nnz
    if 24.0 * entries > MAX_PROJECTION_BYTES:
        raise GroupTooLarge(f"{rest.size} rows whose projection would hold {entries:.3g} entries")
    projected = (others - (others @ s.T) @ s).tocsr()
    projected.eliminate_zeros()
    if not projected.nnz:
        return len(disjoint)
    compact = merge_private_columns(projected)
    if 8.0 * rest.size * compact.shape[1] <= max_dense_bytes:
        dense = compact.toarray()
    elif rest.size <= MAX_SKETCH_ROWS:
        dense = column_sketch(compact)
    else:
        raise GroupTooLarge(f"{rest.size} rows sharing {compact.shape[1]} coordinates after removing "
                            f"{len(disjoint)} disjoint ones")
    return len(disjoint) + rank_from_singular_values(np.linalg.svd(dense, compute_uv=False), rtol, reference=1.0).rank


#: row groups too wide for a dense block are sketched when they have at most this many rows
MAX_SKETCH_ROWS = 2048
#: and when their projection against the disjoint rows holds at most this many bytes
MAX_PROJECTION_BYTES = 2**30


def column_sketch(rows: sp.csr_matrix, seed: int = 0, block: int = 1 << 14) -> np.ndarray:
    """rows @ Omega for a Gaussian Omega of n x k, k = min(n, 2 m + 16) for m rows: the same rank as ``rows``.

    The m rows span an r-dimensional space; Omega restricted to it is an r x k
    Gaussian matrix with k >= 2 r + 16, full rank with probability one and
    condition number below about (1 + 1/sqrt 2) / (1 - 1/sqrt 2) ~ 6 with
    overwhelming probability (Davidson-Szarek), so the singular values are
    moved by a bounded factor and the rank threshold (1e-8 against gaps of
    1e-16 for exact laws) decides as on the rows themselves. Omega is drawn
    block by block of columns (``block``) so that no n x k matrix is held.
    """
    m, n = rows.shape
    k = min(n, 2 * m + 16)
    if k == n:
        return rows.toarray()
    rng = np.random.default_rng(seed)
    out = np.zeros((m, k))
    for start in range(0, n, block):
        stop = min(n, start + block)
        out += rows[:, start:stop] @ rng.standard_normal((stop - start, k))
    return out / np.sqrt(k)

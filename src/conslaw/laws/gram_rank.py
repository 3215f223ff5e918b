"""The rank of a set of laws whose matrix laws are held as :class:`~.gram_block.GramBlock`\\ s (Def. 2.10).

Explicitly, a head of width c contributes c(c+1)/2 gradient rows that all overlap,
so the row-overlap graph of :func:`conslaw.rank.sparse_rank` holds ~c^4 / 4 pairs
per head and its components chain whole layers together. Here a block is one node:

- the span of a block's entry gradients is V = {S G : S symmetric} with G = [L, -R] (c x n)
  at theta, of dimension c(c+1)/2 - (c-r)(c-r+1)/2 for r = rank G (S G = 0 iff the
  range of S lies in the left null space of G);
- blocks of one component are checked to share no coordinate, so their spans are
  orthogonal and the rank of a component is sum over its blocks of dim V plus the
  rank of its other (unit-norm) rows O projected off every V. That rank is read from the
  Gram matrix K = O O^T - sum_blocks F F^T, where F_o = <P_V o, .> in orthonormal
  coordinates of V: with Y = X G^T (X: o on the block's coordinates, c x n),
  M = G G^T = U diag(lambda) U^T and Z = U^T (Y + Y^T)/2 U, the projection is S G with
  U^T S U = 2 Z_ab / (lambda_a + lambda_b) (the Lyapunov equation S M + M S = Y + Y^T),
  and <P o, P o'> = sum_ab 2 Z_ab Z'_ab / (lambda_a + lambda_b): F = Z * sqrt(2 / (lambda_a + lambda_b)).

K squares the singular values of the projected rows: its rank threshold is
:data:`GRAM_RTOL` on their square roots (1e-10 on K's eigenvalues against round-off of
~1e-15), looser than :data:`conslaw.rank.DEFAULT_RTOL`; components without a block keep
the plain rule of :func:`conslaw.rank.sparse_rank`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from ..rank import DEFAULT_RTOL, GroupTooLarge, rank_from_singular_values, sparse_rank, sparse_rows
from .gram_block import GramBlock
from .law import Law
from .verify import split_block_entries

#: rank threshold on the singular values of the projected rows, read through their Gram matrix
GRAM_RTOL = 1e-5
#: a component with blocks holds a dense Gram matrix of its other rows: at most this many (1.1 GB)
MAX_GRAM_ROWS = 12_000


class LawRanks:
    """Ranks of subsets of ``laws`` at ``theta``: plain laws as sparse rows, whole blocks through their matrix G.

    Args:
        laws: the laws (plain :class:`~.law.Law` and :class:`~.gram_block.GramEntryLaw`).
        theta: the point.
        D: number of coordinates.
    """

    def __init__(self, laws: Sequence[Law], theta: torch.Tensor, D: int) -> None:
        self.laws, self.theta, self.D = laws, theta, D
        self.plain, self.blocks = split_block_entries(laws)
        self.jac = sparse_rows(_Gradients([laws[k] for k in self.plain], theta), D)

    def rank(self, selected: np.ndarray | None = None, rtol: float = DEFAULT_RTOL) -> int:
        """Number of independent laws among ``selected`` (a boolean mask over the laws; all when None).

        A block enters whole when every one of its entries is selected; its selected entries enter as sparse
        rows otherwise.
        """
        mask = np.ones(len(self.laws), dtype=bool) if selected is None else np.asarray(selected, dtype=bool)
        rows = self.jac[np.flatnonzero(mask[self.plain])]
        whole, loose = [], []
        for block, (where, _, _) in self.blocks.items():
            chosen = mask[where]
            if chosen.all() and where.size == block.size * (block.size + 1) // 2:
                whole.append(block)
            else:
                loose += [self.laws[k] for k in where[chosen]]
        if loose:
            rows = sp.vstack([rows, sparse_rows(_Gradients(loose, self.theta), self.D)], format="csr")
        return mixed_rank(rows, whole, self.theta, self.D, rtol)


class _Gradients(Sequence):
    """The sparse gradients of ``laws`` at ``theta``, computed when read."""

    def __init__(self, laws: Sequence[Law], theta: torch.Tensor) -> None:
        self.laws, self.theta = laws, theta

    def __len__(self) -> int:
        return len(self.laws)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        return self.laws[k].sparse_grad(self.theta)


def block_rank(block: GramBlock, theta: torch.Tensor, rtol: float = DEFAULT_RTOL) -> int:
    """dim {S G : S symmetric} = c(c+1)/2 - (c-r)(c-r+1)/2, r = rank G (G = [L, -R] at theta)."""
    sv = torch.linalg.svdvals(block.matrix(theta))
    r = rank_from_singular_values(sv, rtol).rank if sv.numel() else 0
    c = block.size
    return c * (c + 1) // 2 - (c - r) * (c - r + 1) // 2


def mixed_rank(rows: sp.csr_matrix, blocks: Sequence[GramBlock], theta: torch.Tensor, D: int,
               rtol: float = DEFAULT_RTOL) -> int:
    """Rank of unit-norm sparse ``rows`` together with every entry of ``blocks`` (see the module docstring)."""
    if not blocks:
        return sparse_rank(rows, D, rtol) if rows.shape[0] else 0
    blocks, rows = _separate(list(blocks), rows, theta, D)
    m, nb = rows.shape[0], len(blocks)
    coords = [b.coordinates().reshape(-1).numpy() for b in blocks]
    offsets = np.concatenate([[0], np.cumsum([c.size for c in coords])])
    every = np.concatenate(coords)
    order = np.argsort(every, kind="stable")
    ordered = every[order]
    # which block (and where in it) each stored entry of the rows falls
    pos = np.minimum(np.searchsorted(ordered, rows.indices), ordered.size - 1)
    hit = ordered[pos] == rows.indices
    entry_row = np.repeat(np.arange(m), np.diff(rows.indptr))[hit]
    flat = order[pos[hit]]
    entry_block = np.searchsorted(offsets, flat, side="right") - 1
    entry_local = flat - offsets[entry_block]
    entry_value = rows.data[hit]
    overlap = (rows @ rows.T).tocoo() if m else sp.coo_matrix((0, 0))
    edges_r = np.concatenate([overlap.row, entry_row])
    edges_c = np.concatenate([overlap.col, m + entry_block])
    graph = sp.coo_matrix((np.ones(edges_r.size), (edges_r, edges_c)), shape=(m + nb, m + nb))
    _, labels = connected_components(graph, directed=False)
    block_label = labels[m:]
    plain_only = np.flatnonzero(~np.isin(labels[:m], block_label))
    total = sparse_rank(rows[plain_only], D, rtol) if plain_only.size else 0
    for label in np.unique(block_label):
        members = np.flatnonzero(block_label == label)
        comp_rows = np.flatnonzero(labels[:m] == label)
        total += sum(block_rank(blocks[b], theta, rtol) for b in members)
        if not comp_rows.size:
            continue
        if comp_rows.size > MAX_GRAM_ROWS:
            raise GroupTooLarge(f"{comp_rows.size} rows meeting {members.size} matrix-law blocks (at most "
                                f"{MAX_GRAM_ROWS} are ranked through their dense Gram matrix)")
        sub = rows[comp_rows]
        gram = torch.from_numpy((sub @ sub.T).toarray())
        local_row = np.full(m, -1)
        local_row[comp_rows] = np.arange(comp_rows.size)
        for b in members:
            sel = entry_block == b
            f_rows, f = _projections(blocks[b], theta, local_row[entry_row[sel]], entry_local[sel], entry_value[sel],
                                     rtol)
            gram[np.ix_(f_rows, f_rows)] -= f @ f.T
        eig = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().flip(0)
        total += rank_from_singular_values(eig, GRAM_RTOL, reference=1.0).rank
    return total


def _projections(block: GramBlock, theta: torch.Tensor, row: np.ndarray, local: np.ndarray, value: np.ndarray,
                 rtol: float) -> tuple[np.ndarray, torch.Tensor]:
    """(rows that meet the block, F): F_o = the projection of row o onto the block's span in orthonormal
    coordinates, from the row's stored entries (row, local flat position in the block, value)."""
    G = block.matrix(theta)
    c, n = G.shape
    touching, inverse = np.unique(row, return_inverse=True)
    Y = torch.zeros(touching.size * c, c, dtype=G.dtype)
    a, col = torch.from_numpy(local // n), torch.from_numpy(local % n)
    Y.index_add_(0, torch.from_numpy(inverse) * c + a, torch.from_numpy(value)[:, None] * G[:, col].T)
    Y = Y.reshape(touching.size, c, c)
    lam, U = torch.linalg.eigh(G @ G.T)
    Z = U.T @ (0.5 * (Y + Y.transpose(1, 2))) @ U
    total = lam[:, None] + lam[None, :]
    weight = torch.where(total > 2.0 * rtol**2 * lam.max().clamp_min(1e-300), (2.0 / total.clamp_min(1e-300)).sqrt(),
                         0.0)
    return touching, (Z * weight).reshape(touching.size, c * c)


def _separate(blocks: list[GramBlock], rows: sp.csr_matrix, theta: torch.Tensor,
              D: int) -> tuple[list[GramBlock], sp.csr_matrix]:
    """Blocks that share no coordinate with another block; those that do go in as explicit entry rows."""
    every = np.concatenate([b.coordinates().reshape(-1).numpy() for b in blocks])
    owner = np.repeat(np.arange(len(blocks)), [b.coordinates().numel() for b in blocks])
    order = np.argsort(every, kind="stable")
    dup = np.flatnonzero(every[order][1:] == every[order][:-1])
    shared = set(owner[order[dup]].tolist()) | set(owner[order[dup + 1]].tolist())
    if not shared:
        return blocks, rows
    grads = [blocks[k].sparse_grad(i, j, theta) for k in sorted(shared)
             for i in range(blocks[k].size) for j in range(i, blocks[k].size)]
    rows = sp.vstack([rows, sparse_rows(grads, D)], format="csr")
    return [b for k, b in enumerate(blocks) if k not in shared], rows

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

from ..rank import DEFAULT_RTOL, GroupTooLarge, rank_from_singular_values, sparse_rank, sparse_rows, used_columns
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
        self.jac = merged_rows(_Gradients([laws[k] for k in self.plain], theta), D,
                               [block.coordinates().reshape(-1).numpy() for block in self.blocks])

    def rank(self, selected: np.ndarray | None = None, rtol: float = DEFAULT_RTOL) -> int:
        """Number of independent laws among ``selected`` (a boolean mask over the laws; all when None).

        A block enters whole when every one of its entries is selected; its selected entries enter as sparse
        rows otherwise. ``rtol`` is the threshold of :func:`conslaw.rank.sparse_rank`; the rows of a component
        that meets a block are ranked at max(rtol, :data:`GRAM_RTOL`) (through their Gram matrix).
        """
        mask = np.ones(len(self.laws), dtype=bool) if selected is None else np.asarray(selected, dtype=bool)
        rows = self.jac[np.flatnonzero(mask[self.plain])]
        whole, loose = [], []
        for block, (where, ii, jj) in self.blocks.items():
            chosen = mask[where]
            distinct = len(set(zip(ii[torch.from_numpy(chosen)].tolist(), jj[torch.from_numpy(chosen)].tolist(),
                                   strict=True)))
            if chosen.all() and distinct == block.size * (block.size + 1) // 2:
                whole.append(block)
            else:
                loose += [self.laws[k] for k in where[chosen]]
        if loose:  # entries of blocks: their coordinates were kept unmerged in self.jac
            extra = sparse_rows(_Gradients(loose, self.theta), self.D)
            extra.resize((extra.shape[0], rows.shape[1]))
            rows = sp.vstack([rows, extra], format="csr")
        return mixed_rank(rows, whole, self.theta, rows.shape[1], rtol)


def merged_rows(rows: Sequence[tuple[torch.Tensor, torch.Tensor]], D: int,
                keep: Sequence[np.ndarray] = ()) -> sp.csr_matrix:
    """The unit-norm rows of :func:`conslaw.rank.sparse_rows` with every row's private coordinates merged.

    A coordinate that one row alone touches (and that is not in ``keep``, the coordinates of the blocks) adds to
    that row's norm and to no inner product: each row's private entries become one column, D + its index,
    holding their norm (:func:`conslaw.rank.merge_private_columns`, without ever holding the unmerged matrix:
    two passes over the gradients). The Gram matrix, so every rank and the overlap graph, is unchanged; a
    100M-parameter GPT-2, whose ~10^5 plain laws hold ~10^8 entries that are nearly all private, keeps ~2 %.
    """
    touched = np.zeros(D, dtype=np.uint8)  # 0, 1 or 2 (= shared)
    for support, _ in rows:
        s = support.numpy()
        touched[s] = np.minimum(touched[s], 1) + 1
    for coords in keep:
        touched[coords] = 2
    indices, data, lengths = [], [], np.zeros(len(rows), dtype=np.int64)
    for r, (support, g) in enumerate(rows):
        s, v = support.numpy(), (g / g.norm().clamp_min(1e-300)).numpy()
        private = touched[s] == 1
        shared = ~private
        indices.append(s[shared])
        data.append(v[shared])
        if private.any():
            indices.append(np.array([D + r]))
            data.append(np.array([np.sqrt(np.square(v[private]).sum())]))
        lengths[r] = shared.sum() + bool(private.any())
    del touched
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dtype=dt))  # noqa: E731
    jac = sp.csr_matrix((cat(data, np.float64), cat(indices, np.int64), indptr), shape=(len(rows), D + len(rows)))
    jac.sum_duplicates()
    return jac


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
    # which block (and where in it) each stored entry of the rows falls: an owner map (block + 1, 0: none) first,
    # so that only the entries on block coordinates are searched, then block by block
    owner = np.zeros(rows.shape[1], dtype=np.int32)
    for k, block in enumerate(blocks):
        owner[block.coordinates().reshape(-1).numpy()] = k + 1
    hit = np.flatnonzero(owner[rows.indices])
    entry_block = owner[rows.indices[hit]] - 1  # int32 like the arrays below: ~2 x 10^7 entries on a GPT-2
    del owner
    by_block = np.argsort(entry_block, kind="stable")
    hit, entry_block = hit[by_block], entry_block[by_block]
    del by_block
    bounds = np.searchsorted(entry_block, np.arange(nb + 1))
    del entry_block
    entry_row = (np.searchsorted(rows.indptr, hit, side="right") - 1).astype(np.int32)
    entry_value = rows.data[hit]
    entry_local = np.empty(hit.size, dtype=np.int32)
    for k, block in enumerate(blocks):
        coords = block.coordinates().reshape(-1).numpy()
        order = np.argsort(coords)
        part = slice(bounds[k], bounds[k + 1])
        entry_local[part] = order[np.searchsorted(coords[order], rows.indices[hit[part]])]
    entry_block = np.repeat(np.arange(nb, dtype=np.int32), np.diff(bounds))
    del hit
    rows = used_columns(rows)  # block coordinates are no longer needed as columns: only the overlaps
    overlap = (rows @ rows.T).tocoo() if m else sp.coo_matrix((0, 0))
    pairs = np.unique(entry_row.astype(np.int64) * nb + entry_block)  # (row, block) once, not once per entry
    edges_r = np.concatenate([overlap.row, pairs // nb])
    edges_c = np.concatenate([overlap.col, m + pairs % nb])
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
            sel = slice(bounds[b], bounds[b + 1])
            if sel.start == sel.stop:
                continue
            f_rows, f = _projections(blocks[b], theta, local_row[entry_row[sel]], entry_local[sel], entry_value[sel],
                                     rtol)
            gram[np.ix_(f_rows, f_rows)] -= f @ f.T
        eig = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().flip(0)
        total += rank_from_singular_values(eig, max(rtol, GRAM_RTOL), reference=1.0).rank
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
    touched = np.zeros(rows.shape[1], dtype=np.uint8)  # 0, 1, 2 = two blocks or more
    for block in blocks:
        coords = block.coordinates().reshape(-1).numpy()
        touched[coords] = np.minimum(touched[coords], 1) + 1
    shared = [k for k, block in enumerate(blocks) if (touched[block.coordinates().reshape(-1).numpy()] > 1).any()]
    del touched
    if not shared:
        return blocks, rows
    grads = [blocks[k].sparse_grad(i, j, theta) for k in shared
             for i in range(blocks[k].size) for j in range(i, blocks[k].size)]
    extra = sparse_rows(grads, D)
    extra.resize((extra.shape[0], rows.shape[1]))
    rows = sp.vstack([rows, extra], format="csr")
    return [b for k, b in enumerate(blocks) if k not in set(shared)], rows

"""The one verifier: how far a law's gradient is from orthogonal to sampled fields (Prop 2.3).

For a law h and fields chi_1..chi_n at theta, the residual is

    max_i |<grad h(theta), chi_i(theta)>| / (|grad h(theta)| |chi_i(theta)|_S),

where |chi|_S is the norm of the field on the law's own support S (the
coordinates h depends on). Dividing by the field's share on S, not by its full
norm, keeps a law from passing just because the field is large elsewhere. The
share is floored at :data:`SHARE_FLOOR` times the field's norm: a field whose
part on S is round-off (a coordinate the loss ignores) measures that round-off
against the field, not against itself. A law
is exact when its residual is at round-off for every field. Callers check at
more than one theta (see :mod:`conslaw.nn.status`) so that a degenerate point,
where every field vanishes on S, cannot make a law pass vacuously.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .gram_block import GramBlock
from .law import Law

#: a residual below this is round-off (a verified, exact law)
EXACT = 1e-10
#: the field's share on a law's support is floored at this fraction of its full norm
SHARE_FLOOR = 1e-4


def law_residual(law: Law, fields: torch.Tensor, theta: torch.Tensor,
                 sparse: tuple[torch.Tensor, torch.Tensor] | None = None,
                 field_norms: torch.Tensor | None = None) -> float:
    """max over the rows chi of ``fields`` of |<grad h, chi>| / (|grad h| |chi on supp h|).

    Args:
        law: the law h.
        fields: an (n, D) tensor of fields at theta.
        theta: the point.
        sparse: (support, gradient on it) when already computed.
        field_norms: the norms of the rows of ``fields`` when already computed (many laws, one set of fields).
    """
    support, g = sparse if sparse is not None else law.sparse_grad(theta)
    gnorm = g.norm()
    if gnorm == 0 or fields.shape[0] == 0:
        return 0.0
    share = fields[:, support]
    norms = fields.norm(dim=1) if field_norms is None else field_norms
    denominator = torch.maximum(share.norm(dim=1), SHARE_FLOOR * norms)
    cos = (share @ g).abs() / (gnorm * denominator).clamp_min(1e-300)
    return float(cos.max())


def residuals(laws: Sequence[Law], fields: torch.Tensor, theta: torch.Tensor) -> np.ndarray:
    """:func:`law_residual` of every law against the same fields.

    Args:
        laws: the laws.
        fields: an (n, D) tensor of fields at theta.
        theta: the point.
    """
    norms = fields.norm(dim=1)
    return np.array([law_residual(law, fields, theta, field_norms=norms) for law in laws])


#: streamed fields are held together up to this many bytes (at least one field)
FIELD_BUFFER_BYTES = 2**29
#: laws are verified together in chunks of at most this many gradient entries (memory of one chunk: ~40 bytes each)
CHUNK_ENTRIES = 1 << 22


def batched_residuals(laws: Sequence[Law], rows, theta: torch.Tensor, chunk_entries: int = CHUNK_ENTRIES) -> np.ndarray:
    """:func:`law_residual` of every law, vectorised over the laws and streamed over the fields.

    Same residual as :func:`law_residual`, max over the fields chi of
    |<grad h, chi>| / (|grad h| max(|chi|_S, SHARE_FLOOR |chi|)), computed for a
    chunk of laws at a time from their concatenated sparse gradients (one gather
    and three segment sums per field instead of one small product per law), so
    that no per-law Python work is repeated per field and no (n, D) matrix of
    fields need be held: ``rows`` is an (n, D) tensor (all fields, each chunk's
    gradients computed once) or an iterable of length-D fields (one held at a
    time, buffered up to :data:`FIELD_BUFFER_BYTES`; the gradients are recomputed per block of fields).

    Args:
        laws: the laws.
        rows: an (n, D) tensor of fields at theta, or an iterable of length-D fields.
        theta: the point.
        chunk_entries: gradient entries per chunk of laws.
    """
    out = np.zeros(len(laws))
    plain, blocks = split_block_entries(laws)
    plain_laws, plain_out = [laws[k] for k in plain], np.zeros(len(plain))

    def consume(fields: torch.Tensor) -> None:
        norms = fields.norm(dim=1)
        _chunked(plain_laws, fields, norms, theta, chunk_entries, plain_out)
        for block, (where, i, j) in blocks.items():
            out[where] = np.maximum(out[where], _block_residuals(block, theta, fields, norms)[:, i, j].amax(0).numpy())

    if isinstance(rows, torch.Tensor):
        if rows.shape[0]:
            consume(rows)
    else:
        block, filled = None, 0
        for chi in rows:  # buffered into blocks of fields within FIELD_BUFFER_BYTES: chunk gradients once per block
            if chi.numel() * chi.element_size() > FIELD_BUFFER_BYTES // 2:  # one field a block: no copy
                consume(chi.reshape(1, -1))
                del chi
                continue
            if block is None:
                block = torch.empty(max(1, int(FIELD_BUFFER_BYTES // (chi.numel() * chi.element_size()))),
                                    chi.numel(), dtype=chi.dtype)
            block[filled] = chi.reshape(-1)
            filled += 1
            del chi
            if filled == block.shape[0]:
                consume(block)
                filled = 0
        if filled and block is not None:
            consume(block[:filled])
    out[plain] = plain_out
    return out


def split_block_entries(laws: Sequence[Law]) -> tuple[np.ndarray, dict]:
    """Positions of the plain laws, and per :class:`~.gram_block.GramBlock` (positions, rows i, rows j) of its
    entries among ``laws``."""
    plain: list[int] = []
    blocks: dict[GramBlock, tuple[list, list, list]] = {}
    for k, law in enumerate(laws):
        block = getattr(law, "block", None)
        if isinstance(block, GramBlock):
            where, ii, jj = blocks.setdefault(block, ([], [], []))
            where.append(k)
            ii.append(law.pair[0])  # type: ignore[attr-defined]
            jj.append(law.pair[1])  # type: ignore[attr-defined]
        else:
            plain.append(k)
    return np.array(plain, dtype=np.int64), {b: (np.array(w), torch.tensor(i), torch.tensor(j))
                                             for b, (w, i, j) in blocks.items()}


def _block_residuals(block: GramBlock, theta: torch.Tensor, fields: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """(n, c, c): the residual of every entry of ``block`` against each field (:func:`law_residual`'s formula)."""
    dot, grad2, share2 = block.products(theta, fields)
    gnorm = grad2.sqrt()
    denominator = torch.maximum(share2.sqrt(), SHARE_FLOOR * norms[:, None, None])
    cos = dot.abs() / (gnorm * denominator).clamp_min(1e-300)
    return torch.where(gnorm == 0, 0.0, cos)


def _chunked(laws: Sequence[Law], fields: torch.Tensor, norms: torch.Tensor, theta: torch.Tensor,
             chunk_entries: int, out: np.ndarray) -> None:
    """out[k] = max(out[k], residual of law k against the (n, D) ``fields``), chunk by chunk of laws."""
    start, grads, entries = 0, [], 0
    for k, law in enumerate(laws):
        grads.append(law.sparse_grad(theta))
        entries += grads[-1][0].numel()
        if entries >= chunk_entries or k == len(laws) - 1:
            res = _chunk_residuals(grads, fields, norms)
            np.maximum(out[start:k + 1], res, out=out[start:k + 1])
            start, grads, entries = k + 1, [], 0


def _chunk_residuals(grads: list[tuple[torch.Tensor, torch.Tensor]], fields: torch.Tensor,
                     norms: torch.Tensor) -> np.ndarray:
    """Residuals of the laws with sparse gradients ``grads`` (support, values) against ``fields`` (n, D)."""
    m = len(grads)
    lengths = torch.tensor([s.numel() for s, _ in grads])
    support = torch.cat([s for s, _ in grads])
    g = torch.cat([v for _, v in grads]).to(fields.dtype)
    segment = torch.repeat_interleave(torch.arange(m), lengths)
    gnorm = torch.zeros(m, dtype=g.dtype).index_add_(0, segment, g * g).sqrt()
    worst = torch.zeros(m, dtype=g.dtype)
    for chi, norm in zip(fields, norms, strict=True):
        share = chi[support]
        dot = torch.zeros(m, dtype=g.dtype).index_add_(0, segment, share * g)
        share_norm = torch.zeros(m, dtype=g.dtype).index_add_(0, segment, share * share).sqrt()
        denominator = torch.maximum(share_norm, SHARE_FLOOR * norm)
        worst = torch.maximum(worst, dot.abs() / (gnorm * denominator).clamp_min(1e-300))
    return torch.where(gnorm == 0, 0.0, worst).numpy()

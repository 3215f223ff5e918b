"""Numerical rank with its spectral gap.

rank = number of singular values above ``rtol * sigma_max``; the gap
sigma_r / sigma_{r+1} says how clearly the rank is separated from round-off.
A small gap is a warning, never a silent answer (DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_RTOL = 1e-8
GAP_WARNING = 1e3


@dataclass(frozen=True)
class RankResult:
    rank: int
    smallest_kept: float | None
    largest_dropped: float | None

    @property
    def gap(self) -> float | None:
        """sigma_r / sigma_{r+1}; None when nothing was kept or nothing nonzero dropped."""
        return spectral_gap(self.smallest_kept, self.largest_dropped)


def spectral_gap(smallest_kept: float | None, largest_dropped: float | None) -> float | None:
    if smallest_kept is None or not largest_dropped:
        return None
    return smallest_kept / largest_dropped


def numerical_rank(rows: torch.Tensor, rtol: float = DEFAULT_RTOL, normalize: bool = True) -> RankResult:
    """Rank of the span of the rows of ``rows`` (k x D).

    With ``normalize`` every nonzero row is scaled to unit norm first, so the
    threshold is relative to the vectors themselves, not to their lengths.
    """
    if rows.numel() == 0:
        return RankResult(0, None, None)
    if normalize:
        norms = rows.norm(dim=1, keepdim=True)
        rows = torch.where(norms > 0, rows / norms.clamp_min(1e-300), rows)
    sv = torch.linalg.svdvals(rows)
    if sv.numel() == 0 or sv[0] == 0:
        return RankResult(0, None, None)
    keep = sv > rtol * sv[0]
    r = int(keep.sum())
    kept = float(sv[r - 1]) if r else None
    dropped = float(sv[r]) if r < sv.numel() else None
    return RankResult(r, kept, dropped)

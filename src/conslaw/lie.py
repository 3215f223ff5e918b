"""The Lie engine: dimension of the trace at theta of the generated Lie algebra.

By Thm 2.11 of the paper the number of independent conservation laws is
``D - dim Lie(W)(theta)``. Lie(W)(theta) is spanned by the right-nested
brackets [X1, [X2, [..., Xk]]](theta) of elements X_i of W. For a vector
field space W = span{chi_p}, the map (p1..pk) -> [chi_p1, [..., chi_pk]](theta)
is multilinear in the coefficients of the chi_p, so random samples span
each level with probability one once there are more samples than new
dimensions. The engine therefore, level by level:

1. draws ``D - rank + margin`` random nested brackets (several chunks when
   that is large), evaluated by nested forward-mode derivatives
   ``[X, Y](theta) = DY(theta) X(theta) - DX(theta) Y(theta)`` batched with
   ``vmap`` (no Jacobian is ever materialized);
2. scales every bracket by the size of the two terms it is the difference
   of (so a bracket that cancels to round-off reads as round-off), projects
   out the directions already found (classical Gram-Schmidt, two passes: the
   loss of orthogonality, about eps / rtol, stays far below the threshold)
   and keeps the new singular directions above ``rtol``;
3. stops when the rank reaches D or a whole level adds nothing (reported as
   ``saturated``). It is never told the expected answer.

The gap between the smallest kept and the largest dropped singular value,
over all levels, is reported as the spectral gap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch.func import jvp, vmap
from torch.utils._pytree import tree_map
from tqdm.auto import tqdm

from .errors import ConslawError
from .fields import FieldSource
from .rank import DEFAULT_RTOL, GAP_WARNING, check_rtol, rank_from_singular_values, spectral_gap
from .resources import check_memory, count_estimate


@dataclass
class LevelReport:
    """One level of right-nested brackets: how many drawn, how many new directions."""

    level: int
    samples: int
    added: int
    rank: int

    def as_dict(self) -> dict:
        """JSON-ready level report."""
        return {"level": self.level, "samples": self.samples, "added": self.added, "rank": self.rank}


@dataclass
class LieResult:
    """dim Lie(W)(theta) with the evidence behind it."""

    D: int
    dim: int
    levels: list[LevelReport]
    saturated: bool
    smallest_kept: float | None
    largest_dropped: float | None
    seed: int
    seconds: float
    basis: torch.Tensor = field(repr=False)
    warnings: list[str] = field(default_factory=list)

    @property
    def lie_laws(self) -> int:
        """D - dim Lie(W)(theta): the number of independent conservation laws (Thm 2.11)."""
        return self.D - self.dim

    @property
    def num_laws(self) -> int:
        """Alias of :attr:`lie_laws` (the ``count`` JSON key)."""
        return self.lie_laws

    @property
    def spectral_gap(self) -> float | None:
        """sigma_r / sigma_{r+1} over all levels (None when one side is missing)."""
        return spectral_gap(self.smallest_kept, self.largest_dropped)


def bracket_value(source: FieldSource, theta: torch.Tensor, ps: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """[chi_p1, [chi_p2, [..., chi_pk]]](theta) and the size of the terms it cancels from.

    Returns ``(value, scale)`` with scale = |DY X| + |DX Y| for the outermost
    bracket (|X| for k = 1), so that ``value / scale`` is at round-off level
    exactly when the bracket vanishes.
    """
    x = source.field(theta, ps[0])
    if len(ps) == 1:
        return x, x.norm()

    def inner(t: torch.Tensor) -> torch.Tensor:
        return bracket_value(source, t, ps[1:])[0]

    y, dy_x = jvp(inner, (theta,), (x,))
    _, dx_y = jvp(lambda t: source.field(t, ps[0]), (theta,), (y,))
    return dy_x - dx_y, dy_x.norm() + dx_y.norm()


def sample_brackets(source: FieldSource, theta: torch.Tensor, level: int, n: int,
                    generator: torch.Generator, batch: int = 256) -> torch.Tensor:
    """n random level-``level`` brackets at theta, each divided by its scale: (n, D)."""
    ps = [source.sample(n, generator) for _ in range(level)]
    fn = vmap(lambda *p: bracket_value(source, theta, p), in_dims=(0,) * level)
    rows = []
    for start in range(0, n, batch):
        chunk = [tree_map(lambda t, s=start: t[s:s + batch], p) for p in ps]
        value, scale = fn(*chunk)
        scale = scale.unsqueeze(1)
        rows.append(torch.where(scale > 0, value / scale.clamp_min(1e-300), torch.zeros_like(value)))
    return torch.cat(rows)


def singular_directions(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values of ``rows`` (k x D) and its right singular vectors, largest first.

    QR of rows^T, then the SVD of the small triangular factor: the same
    values as a direct SVD, several times faster when D >> k.
    """
    q, t = torch.linalg.qr(rows.T)
    u, sv, _ = torch.linalg.svd(t)
    return sv, (q @ u).T


def lie_trace_dimension(source: FieldSource, theta: torch.Tensor, *, seed: int = 0,
                        max_level: int = 12, margin: int = 8, rtol: float = DEFAULT_RTOL,
                        max_chunk: int = 1024, batch: int = 256,
                        progress: bool = False, max_memory: float | None = None) -> LieResult:
    """dim Lie(W)(theta) for the fields of ``source`` (Thm 2.11), by randomized brackets.

    ``seed`` fixes every random draw; the same seed gives the same result.
    """
    start_time = time.perf_counter()
    theta = source.space.check_theta(theta)
    rtol = check_rtol(rtol)
    D = source.space.D
    need, seconds = count_estimate(D, margin=margin, max_chunk=max_chunk, batch=batch)
    check_memory(need, f"the Lie engine on D = {D:,} parameters", "count a block (--block) or a smaller model",
                 max_memory, seconds)
    if margin < 1:
        raise ConslawError(f"margin must be >= 1, got {margin}", "use the default margin=8")
    if max_chunk <= margin:
        raise ConslawError(f"max_chunk must be larger than margin, got max_chunk={max_chunk}, margin={margin}: "
                           "a chunk that small cannot show that a level adds nothing", "raise max_chunk")
    D = source.space.D
    generator = torch.Generator().manual_seed(seed)
    basis = torch.zeros(0, D, dtype=theta.dtype)
    levels: list[LevelReport] = []
    kept_min: float | None = None
    dropped_max: float | None = None
    saturated = False
    bar = tqdm(total=D, desc="Lie rank", unit="dim", disable=not progress, leave=False)
    for level in range(1, max_level + 1):
        added = drawn = 0
        while True:
            want = D - basis.shape[0] + margin
            want += int(source.oversample * (D - basis.shape[0]))
            n = min(max_chunk, want)
            rows = sample_brackets(source, theta, level, n, generator, batch)
            drawn += n
            if basis.shape[0]:
                # project out the span found so far, twice: one classical Gram-Schmidt pass leaves components
                # of size eps * |rows| / rtol along the basis, which on large, badly scaled models (BERT) came
                # back as spurious "new" directions and pushed the rank past D ("twice is enough")
                rows = rows - (rows @ basis.T) @ basis
                rows = rows - (rows @ basis.T) @ basis
            sv, directions = singular_directions(rows)
            # rows are on a common unit scale (each bracket divided by its terms' size): absolute threshold
            new = rank_from_singular_values(sv, rtol, reference=1.0).rank
            if new:
                basis = torch.cat([basis, directions[:new]])
                kept_min = min(kept_min or float("inf"), float(sv[new - 1]))
            if new < sv.numel():
                dropped_max = max(dropped_max or 0.0, float(sv[new]))
            added += new
            bar.update(new)
            if basis.shape[0] >= D or new <= n - margin:
                break
        levels.append(LevelReport(level, drawn, added, basis.shape[0]))
        bar.set_postfix(level=level)
        if basis.shape[0] >= D:
            break
        if added == 0:
            saturated = True
            break
    bar.close()
    if not 0 <= basis.shape[0] <= D:
        raise RuntimeError(f"internal error: the Lie engine found {basis.shape[0]} directions in dimension D = {D}")
    result = LieResult(D=D, dim=basis.shape[0], levels=levels, saturated=saturated,
                       smallest_kept=kept_min, largest_dropped=dropped_max, seed=seed,
                       seconds=time.perf_counter() - start_time, basis=basis)
    if not saturated and result.dim < D:
        result.warnings.append(f"stopped at max_level={max_level} while level {max_level} still "
                               "added directions: the count is an upper bound on the laws")
    gap = result.spectral_gap
    if gap is not None and gap < GAP_WARNING:
        result.warnings.append(f"small spectral gap {gap:.3g} (< {GAP_WARNING:g}): the rank is "
                               "not clearly separated from round-off; try another seed or theta")
    return result

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
from torch.func import jvp, vjp
from torch.utils._pytree import tree_map
from tqdm.auto import tqdm

from .batching import vmap_or_loop
from .errors import ConslawError
from .fields import FieldSource
from .rank import DEFAULT_RTOL, GAP_WARNING, check_rtol, rank_from_singular_values, spectral_gap
from .resources import check_memory, count_estimate
from .threads import engine_threads


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
    #: per level, the first brackets drawn (:class:`Exemplars`), for the derivative check
    exemplars: dict = field(default_factory=dict, repr=False)

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

    With X = chi_p1 and Y the inner bracket, DY X is a jvp of Y along X. DX Y
    is a jvp of X along Y, except for gradient fields (``source.gradient``,
    chi_p = grad s_p): there D chi_p is the Hessian of s_p, symmetric, so
    DX Y = DX^T Y is the vector-Jacobian product of X with cotangent Y, taken
    by reverse mode through the gradient's own graph (one backward, no forward
    mode through a backward pass: with torch 2.13 every binary op of a dual
    and a plain tensor goes through a Python meta kernel there, ~10x the op's
    cost). At level 2 Y = chi_p2 is a gradient too and DY X is a vjp as well.
    The values are the same to round-off; the derivative self-check
    (:mod:`conslaw.derivative_check`) compares them with finite differences.
    """
    value, scale, _, _, _ = bracket_terms(source, theta, ps)
    return value, scale


def bracket_terms(source: FieldSource, theta: torch.Tensor, ps: tuple) -> tuple[torch.Tensor, ...]:
    """:func:`bracket_value` with the parts it is made of: ``(value, scale, X, Y, scale of Y)``.

    X = chi_p1(theta), Y = the inner bracket [chi_p2, [...]](theta) and its own
    scale (for k = 1: Y = X). The derivative check differentiates X and Y by
    finite differences without evaluating them again.
    """
    if len(ps) == 1:
        x = source.field(theta, ps[0])
        norm = x.norm()
        return x, norm, x, x, norm

    def inner(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        value, scale, _, _, _ = bracket_terms(source, t, ps[1:])
        return value, scale

    if not source.gradient:
        x = source.field(theta, ps[0])
        (y, y_scale), (dy_x, _) = jvp(inner, (theta,), (x,))
        _, dx_y = jvp(lambda t: source.field(t, ps[0]), (theta,), (y,))
    else:
        x, pull_x = vjp(lambda t: source.field(t, ps[0]), theta)
        if len(ps) == 2:
            y, pull_y = vjp(lambda t: source.field(t, ps[1]), theta)
            (dy_x,) = pull_y(x)
            y_scale = y.norm()
        else:
            (y, y_scale), (dy_x, _) = jvp(inner, (theta,), (x,))
        (dx_y,) = pull_x(y)
    return dy_x - dx_y, dy_x.norm() + dx_y.norm(), x, y, y_scale


def sample_brackets(source: FieldSource, theta: torch.Tensor, level: int, n: int,
                    generator: torch.Generator, batch: int = 256, exemplars: dict | None = None) -> torch.Tensor:
    """n random level-``level`` brackets at theta, each divided by its scale: (n, D).

    ``exemplars``: when given and without an entry for ``level``, the first
    :data:`EXEMPLARS` brackets are stored there as :class:`Exemplars` (the
    arguments p1..pk, the raw values and scales, X and Y with Y's scale), so
    that the derivative check can test the engine's own brackets without
    recomputing them.
    """
    ps = [source.sample(n, generator) for _ in range(level)]
    values = vmap_or_loop(lambda *p: bracket_value(source, theta, p), source)  # a loop for MoE routing
    terms = vmap_or_loop(lambda *p: bracket_terms(source, theta, p), source)
    rows = []
    for start in range(0, n, batch):
        chunk = [tree_map(lambda t, s=start: t[s:s + batch], p) for p in ps]
        if exemplars is not None and level not in exemplars:
            # the same brackets, with X and Y returned too: the first EXEMPLARS are kept
            value, scale, x, y, y_scale = terms(*chunk)
            k = min(EXEMPLARS, value.shape[0])
            exemplars[level] = Exemplars(theta, [tree_map(lambda t, k=k: t[:k], p) for p in chunk],
                                         *(t[:k].clone() for t in (value, scale, x, y, y_scale)))
            del x, y
        else:
            value, scale = values(*chunk)
        scale = scale.unsqueeze(1)
        rows.append(torch.where(scale > 0, value / scale.clamp_min(1e-300), torch.zeros_like(value)))
    return torch.cat(rows)


@dataclass
class Exemplars:
    """The first brackets of a level (:func:`bracket_terms` batched), kept for the derivative check."""

    #: the point they were evaluated at (the check uses them only at that point)
    theta: torch.Tensor
    args: list
    values: torch.Tensor
    scales: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    y_scales: torch.Tensor


#: from this D on, deeper levels evaluate fewer brackets per vmap (:func:`level_batch`)
LARGE_D = 4096


def level_batch(batch: int, level: int, D: int) -> int:
    """Brackets per ``vmap`` call at ``level``: ``batch``, halved at each level above 2 when D >= LARGE_D.

    A level-k bracket nests k - 1 derivatives of the fields, and the memory of one evaluation (the
    activations of every nested pass) roughly doubles per level: on a ViT of D = 17 000, 256 brackets per
    vmap held 5.4 GB at level 2, 9.4 GB at level 3 and 16.5 GB at level 4. Small networks keep ``batch``
    (there the vmap's fixed cost dominates, and memory is no concern).
    """
    if D < LARGE_D or level <= 2:
        return batch
    return min(batch, max(16, batch >> (level - 2)))


#: brackets per level kept for the derivative check (LieResult.exemplars)
EXEMPLARS = 2

#: kept directions with a smaller singular value get a second Gram-Schmidt pass (see OrthonormalRows)
REORTHOGONALIZE_BELOW = 1e-4


class OrthonormalRows:
    """The kept basis: orthonormal rows in one float64 buffer of D rows, reserved once and filled in place.

    The D x D buffer is reserved with ``torch.empty`` (pages the kernel maps
    only when rows are written), so the resident memory is that of the r kept
    rows, and no row is ever copied to a grown buffer (doubling had peaked at
    1.5 times the basis). Where the reservation is refused, the buffer grows
    by doubling instead.

    ``project(rows)`` removes the span from new rows with one classical
    Gram-Schmidt pass. A kept direction is a projected residual divided by
    its singular value s, so that pass leaves it components of about
    eps / s along the basis: harmless (< 1e-12) for s >= ``REORTHOGONALIZE_BELOW``,
    but up to eps / rtol = 1e-8 for directions near the threshold, and a
    basis that loses orthogonality reports spurious new directions (BERT had
    gone past D). ``append`` therefore projects such directions a second time ("twice is enough") and
    re-orthonormalizes them by Cholesky QR; the n - new discarded rows of a
    chunk are projected once. The basis stays orthonormal to round-off.
    """

    def __init__(self, D: int, dtype: torch.dtype, capacity: int = 0):
        self.D = D
        self.rank = 0
        try:
            self._buffer = torch.empty(D, D, dtype=dtype)
        except RuntimeError:  # the reservation was refused (strict overcommit): grow by doubling
            self._buffer = torch.empty(min(D, max(capacity, 0)), D, dtype=dtype)

    @property
    def rows(self) -> torch.Tensor:
        """The r x D orthonormal rows kept so far (a view of the buffer)."""
        return self._buffer[:self.rank]

    def project(self, rows: torch.Tensor) -> torch.Tensor:
        """rows minus their components along the kept span (one classical Gram-Schmidt pass)."""
        if not self.rank:
            return rows
        basis = self.rows
        return rows - (rows @ basis.T) @ basis

    def append(self, directions: torch.Tensor, reorthogonalize: bool = True) -> None:
        """Add orthonormal ``directions`` (k x D), projected once more against the kept rows if asked."""
        k = directions.shape[0]
        if not k:
            return
        if self.rank and reorthogonalize:
            # second Gram-Schmidt pass, then Cholesky QR: the projected directions are orthonormal up to
            # eps / rtol, so their Gram matrix is I + O(1e-8) and its Cholesky factor is perfectly stable
            directions = self.project(directions)
            chol = torch.linalg.cholesky(directions @ directions.T)
            directions = torch.linalg.solve_triangular(chol, directions, upper=False)
        need = self.rank + k
        if need > self.D:
            raise RuntimeError(f"internal error: the Lie engine found {need} directions in dimension D = {self.D}")
        if need > self._buffer.shape[0]:
            grown = torch.empty(min(self.D, max(need, 2 * self._buffer.shape[0])), self.D, dtype=self._buffer.dtype)
            grown[:self.rank] = self.rows
            self._buffer = grown
        self._buffer[self.rank:need] = directions
        self.rank = need


def lie_trace_dimension(source: FieldSource, theta: torch.Tensor, *, seed: int = 0,
                        max_level: int = 12, margin: int = 8, rtol: float = DEFAULT_RTOL,
                        max_chunk: int = 256, batch: int = 256,
                        progress: bool = False, max_memory: float | None = None,
                        threads: int | None = None) -> LieResult:
    """dim Lie(W)(theta) for the fields of ``source`` (Thm 2.11), by randomized brackets.

    ``seed`` fixes every random draw; the same seed gives the same result.
    ``threads`` sets the intra-op threads (default: the policy of
    :mod:`conslaw.threads`, 1 below D = 1024); the caller's setting is restored.
    """
    with engine_threads(source.space.D, threads):
        return _lie_trace_dimension(source, theta, seed=seed, max_level=max_level, margin=margin, rtol=rtol,
                                    max_chunk=max_chunk, batch=batch, progress=progress, max_memory=max_memory)


def _lie_trace_dimension(source: FieldSource, theta: torch.Tensor, *, seed: int, max_level: int, margin: int,
                         rtol: float, max_chunk: int, batch: int, progress: bool,
                         max_memory: float | None) -> LieResult:
    start_time = time.perf_counter()
    theta = source.space.check_theta(theta)
    rtol = check_rtol(rtol)
    D = source.space.D
    need, seconds = count_estimate(D, margin=margin, max_chunk=max_chunk, batch=batch, closed_forms=False)
    check_memory(need, f"the Lie engine on D = {D:,} parameters", "count a block (--block) or a smaller model",
                 max_memory, seconds)
    if margin < 1:
        raise ConslawError(f"margin must be >= 1, got {margin}", "use the default margin=8")
    if max_chunk <= margin:
        raise ConslawError(f"max_chunk must be larger than margin, got max_chunk={max_chunk}, margin={margin}: "
                           "a chunk that small cannot show that a level adds nothing", "raise max_chunk")
    generator = torch.Generator().manual_seed(seed)
    basis = OrthonormalRows(D, theta.dtype, capacity=min(D, max_chunk))
    levels: list[LevelReport] = []
    exemplars: dict = {}
    kept_min: float | None = None
    dropped_max: float | None = None
    saturated = False
    bar = tqdm(total=D, desc="Lie rank", unit="dim", disable=not progress, leave=False)
    for level in range(1, max_level + 1):
        added = drawn = 0
        while True:
            want = D - basis.rank + margin
            want += int(source.oversample * (D - basis.rank))
            n = min(max_chunk, want)
            rows = basis.project(sample_brackets(source, theta, level, n, generator, level_batch(batch, level, D),
                                                 exemplars))
            drawn += n
            # the chunk's singular values by a Householder QR of rows^T (Q is never formed) and the SVD of the
            # small triangular factor: the same values as a direct SVD, several times faster when D >> n
            reflectors, tau = torch.geqrf(rows.T)
            del rows
            k = min(D, n)
            u, sv, _ = torch.linalg.svd(reflectors[:k].triu())
            # rows are on a common unit scale (each bracket divided by its terms' size): absolute threshold
            new = rank_from_singular_values(sv, rtol, reference=1.0).rank
            if new:
                # the kept directions Q @ [u[:, :new]; 0], applied from the reflectors (ormqr)
                padded = torch.zeros(D, new, dtype=u.dtype)
                padded[:k] = u[:, :new]
                # all kept directions get the second pass when any is below REORTHOGONALIZE_BELOW: re-projecting
                # only those below it (the rest keep eps / 1e-4 along the basis) made the mini GPT's count run
                # away into spurious deep levels, for reasons not yet understood
                basis.append(torch.ormqr(reflectors, tau, padded).T,
                             reorthogonalize=bool(sv[new - 1] < REORTHOGONALIZE_BELOW))
                kept_min = min(kept_min or float("inf"), float(sv[new - 1]))
            if new < sv.numel():
                dropped_max = max(dropped_max or 0.0, float(sv[new]))
            added += new
            bar.update(new)
            if basis.rank >= D or new <= n - margin:
                break
        levels.append(LevelReport(level, drawn, added, basis.rank))
        bar.set_postfix(level=level)
        if basis.rank >= D:
            break
        if added == 0:
            saturated = True
            break
    bar.close()
    if not 0 <= basis.rank <= D:
        raise RuntimeError(f"internal error: the Lie engine found {basis.rank} directions in dimension D = {D}")
    result = LieResult(D=D, dim=basis.rank, levels=levels, saturated=saturated,
                       smallest_kept=kept_min, largest_dropped=dropped_max, seed=seed,
                       seconds=time.perf_counter() - start_time, basis=basis.rows,
                       exemplars=exemplars)
    if not saturated and result.dim < D:
        result.warnings.append(f"stopped at max_level={max_level} while level {max_level} still "
                               "added directions: the count is an upper bound on the laws")
    gap = result.spectral_gap
    if gap is not None and gap < GAP_WARNING:
        result.warnings.append(f"small spectral gap {gap:.3g} (< {GAP_WARNING:g}): the rank is "
                               "not clearly separated from round-off; try another seed or theta")
    return result

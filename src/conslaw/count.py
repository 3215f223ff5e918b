"""Count the conservation laws of a catalog architecture (Thm 2.11).

``count(arch)`` draws theta, runs the Lie engine on the chosen fields and,
independently, ranks the catalog's closed-form laws at the same theta and
checks that they are orthogonal to the fields. The engine is never told the
catalog's answer: ``num_laws`` and ``known_laws`` are computed apart.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from .catalog.base import Architecture
from .derivative_check import DerivativeCheck, checked_derivatives
from .fields import RestrictedFields, restrict
from .lie import LieResult, lie_trace_dimension
from .rank import DEFAULT_RTOL, check_rtol
from .resources import check_memory, count_estimate
from .threads import engine_threads


@dataclass
class CountResult:
    """The count of an architecture's laws: the Lie engine's answer and, apart, the catalog's closed forms."""

    arch: Architecture
    block: list[str] | None
    fields: str
    flow: str
    init: str
    lie: LieResult
    known_laws: int | None
    known_gap: float | None
    max_law_residual: float | None
    seconds: float
    derivative_check: DerivativeCheck | None = None
    threads: int | None = None
    warnings: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        known = "" if self.known_laws is None else f", known_laws={self.known_laws}"
        return (f"CountResult({self.arch.label}: D={self.lie.D}, dim Lie={self.lie.dim}, "
                f"num_laws={self.num_laws}{known}, fields={self.fields})")

    def _repr_html_(self) -> str:
        from .display import law_rows, laws_table

        caption = (f"{self.arch.label}: D = {self.lie.D}, dim Lie(W) = {self.lie.dim}, "
                   f"{self.num_laws} conservation laws (Thm 2.11)")
        laws = self.arch.laws if isinstance(self.arch.laws, list) else []
        return laws_table(law_rows(laws), caption + ("; the catalog's closed forms:" if laws else ""),
                          ("name", "formula"))

    @property
    def lie_laws(self) -> int:
        """D - dim Lie(W)(theta), computed by the engine without being told the answer (Thm 2.11)."""
        return self.lie.lie_laws

    @property
    def num_laws(self) -> int:
        """Alias of :attr:`lie_laws` (the ``count`` JSON key)."""
        return self.lie.lie_laws

    def as_dict(self) -> dict:
        """The JSON object of ``conslaw count --json`` (DESIGN.md's CLI contract)."""
        gap = self.lie.spectral_gap
        return {
            "arch": self.arch.name,
            "label": self.arch.label,
            "config": self.arch.config,
            "block": self.block,
            "fields": self.fields,
            "flow": self.flow,
            "init": self.init,
            "D": self.lie.D,
            "network_D": self.arch.space.D,
            "lie_dim": self.lie.dim,
            "num_laws": self.num_laws,
            "known_laws": self.known_laws,
            "expected": self.arch.expected if self.flow == "gradient" and not self.block else None,
            "expected_source": self.arch.expected_source if self.flow == "gradient" and not self.block else None,
            "levels": [lv.as_dict() for lv in self.lie.levels],
            "saturated": self.lie.saturated,
            "spectral_gap": _finite(gap),
            "smallest_kept_sv": self.lie.smallest_kept,
            "largest_dropped_sv": self.lie.largest_dropped,
            "known_laws_gap": _finite(self.known_gap),
            "max_law_residual": self.max_law_residual,
            "seed": self.lie.seed,
            "derivative_check": None if self.derivative_check is None else self.derivative_check.as_dict(),
            "seconds": self.seconds,
            "threads": self.threads,
            "notes": self.arch.notes,
            "warnings": self.warnings + self.lie.warnings,
        }


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def check_count_size(arch: Architecture, block: list[str] | None, max_memory: float | None) -> None:
    """Refuse a count whose estimated memory exceeds the limit (see :func:`count`), in microseconds."""
    space = arch.space
    D = sum(space.numel(n) for n in set(block or ()) if n in space.shapes) or space.D
    estimate, seconds = count_estimate(D, space.D)
    what = f"count {arch.label} (D = {D:,}{' in the block' if D != space.D else ''})"
    fix = "count smaller widths, or the laws of one block with --block NAMES (Prop 4.3)" if D == space.D else \
        "count smaller widths or a smaller block"
    check_memory(estimate, what, fix, max_memory, seconds)


def count(arch: Architecture, *, fields: str | None = None, flow: str = "gradient",
          init: str = "gaussian", seed: int = 0, theta: torch.Tensor | None = None,
          rtol: float = DEFAULT_RTOL, block: list[str] | None = None, progress: bool = False,
          max_memory: float | None = None, threads: int | None = None) -> CountResult:
    """Number of independent laws of ``arch`` at a random (or given) theta.

    With ``block`` (parameter names), counts the laws that depend on those
    parameters only (Prop 4.3): the fields are restricted to the block and
    the other parameters are resampled for every field; theta is then a point
    of the block's parameter space.

    Before any heavy work the memory the engine would need (a D x D float64
    basis, chunks of up to 256 x D brackets, the closed forms' Gram matrix)
    is estimated and the count refused with the estimate when it exceeds
    ``max_memory`` GB, or the memory available now when ``max_memory`` is None
    (:func:`conslaw.resources.check_memory`).

    ``threads``: intra-op threads for the whole count (default: the policy of
    :mod:`conslaw.threads`: 1 below D = 1024, else the free cores); the
    caller's setting is restored.
    """
    start = time.perf_counter()
    rtol = check_rtol(rtol)
    check_count_size(arch, block, max_memory)
    with engine_threads(arch.space.D, threads) as used:
        result = _count(arch, fields, flow, init, seed, theta, rtol, block, progress, used)
    result.threads = used
    result.seconds = time.perf_counter() - start
    return result


def _count(arch: Architecture, fields: str | None, flow: str, init: str, seed: int, theta: torch.Tensor | None,
           rtol: float, block: list[str] | None, progress: bool, threads: int) -> CountResult:
    start = time.perf_counter()
    source = restrict(arch.fields(fields, flow), block, init)
    laws = arch.law_set(flow)
    if isinstance(source, RestrictedFields) and laws is not None:
        laws = laws.restrict(source, source.sample_rest(torch.Generator().manual_seed(seed + 7)))
    space = source.space
    if theta is None:
        theta = space.sample(init, torch.Generator().manual_seed(seed))
    theta = space.check_theta(theta)
    lie = lie_trace_dimension(source, theta, seed=seed, rtol=rtol, progress=progress, threads=threads)
    known = known_gap = residual = None
    warnings: list[str] = []
    check = checked_derivatives(source, theta, lie, seed, warnings)
    if laws is not None:
        rank = laws.rank(theta, rtol)
        known, known_gap = rank.rank, rank.gap
        if len(laws):
            residual = float(laws.residuals(source, theta, generator=torch.Generator().manual_seed(seed)).max())
            if residual > 1e-8:
                warnings.append(f"a catalog law is not orthogonal to the fields (residual {residual:.2e})")
    return CountResult(arch=arch, block=source.block if block else None,  # type: ignore[attr-defined]
                       fields=source.label, flow=flow, init=init, lie=lie,
                       known_laws=known, known_gap=known_gap, max_law_residual=residual,
                       seconds=time.perf_counter() - start, derivative_check=check, warnings=warnings)


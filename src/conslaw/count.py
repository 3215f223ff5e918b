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
from .fields import RestrictedFields
from .laws import Law, LawSet
from .lie import LieResult, lie_trace_dimension
from .rank import DEFAULT_RTOL


def block_law_set(laws: LawSet, source: RestrictedFields, seed: int) -> LawSet:
    """The catalog laws touching only the block, as functions of the block's coordinates.

    The other parameters are fixed at a random eta: a law of the block does not depend on them.
    """
    eta = source.rest_space.sample(source.init, torch.Generator().manual_seed(seed + 7)) \
        if source.rest_space is not None else torch.zeros(0)
    inside = [law for law in laws if set(law.params) <= set(source.block)]

    def restrict(law: Law) -> Law:
        return Law(name=law.name, formula=law.formula, params=law.params, kind=law.kind,
                   value_fn=lambda t, law=law: law.value(source.full_theta(t, eta)),
                   grad_fn=lambda t, law=law: law.grad(source.full_theta(t, eta))[source.block_index])

    return LawSet(source.space, [restrict(law) for law in inside])


@dataclass
class CountResult:
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
    warnings: list[str] = field(default_factory=list)

    @property
    def num_laws(self) -> int:
        return self.lie.num_laws

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
            "seconds": self.seconds,
            "notes": self.arch.notes,
            "warnings": self.warnings + self.lie.warnings,
        }


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def count(arch: Architecture, *, fields: str | None = None, flow: str = "gradient",
          init: str = "gaussian", seed: int = 0, theta: torch.Tensor | None = None,
          rtol: float = DEFAULT_RTOL, block: list[str] | None = None, progress: bool = False) -> CountResult:
    """Number of independent laws of ``arch`` at a random (or given) theta.

    With ``block`` (parameter names), counts the laws that depend on those
    parameters only (Prop 4.3): the fields are restricted to the block and
    the other parameters are resampled for every field; theta is then a point
    of the block's parameter space.
    """
    start = time.perf_counter()
    source = arch.fields(fields, flow)
    laws = arch.law_set(flow)
    if block:
        source = RestrictedFields(source, block, init)
        if laws is not None:
            laws = block_law_set(laws, source, seed)
    space = source.space
    if theta is None:
        theta = space.sample(init, torch.Generator().manual_seed(seed))
    theta = space.check_theta(theta)
    lie = lie_trace_dimension(source, theta, seed=seed, rtol=rtol, progress=progress)
    known = known_gap = residual = None
    warnings: list[str] = []
    if laws is not None:
        rank = laws.rank(theta, rtol)
        known, known_gap = rank.rank, rank.gap
        if len(laws):
            residual = float(laws.residuals(source, theta, generator=torch.Generator().manual_seed(seed)).max())
            if residual > 1e-8:
                warnings.append(f"a catalog law is not orthogonal to the fields (residual {residual:.2e})")
    return CountResult(arch=arch, block=source.block if block else None, fields=source.kind, flow=flow,
                       init=init, lie=lie,
                       known_laws=known, known_gap=known_gap, max_law_residual=residual,
                       seconds=time.perf_counter() - start, warnings=warnings)

"""Status of a found law on the model: exact, approximate (with its cause) or failed.

A law is checked against loss-gradient fields at the model's theta AND at a
perturbed theta (each parameter moved by 10 % of its own, or the model's,
root-mean-square), so that a degenerate point (a zero-initialised layer where
every field vanishes on the law's coordinates) cannot make it pass vacuously.
The residual is the one of :mod:`conslaw.laws.verify`:

- ``exact``: residual below :data:`~conslaw.laws.EXACT` (round-off);
- ``approximate``: residual below :data:`APPROXIMATE` and a known cause
  (e.g. the eps of a normalization breaks its scale invariance by O(eps / variance));
- ``failed``: the pattern matched but the law does not hold on this model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..laws import EXACT, Law
from ..laws.verify import batched_residuals
from ..params import DTYPE, ParamSpace

APPROXIMATE = 1e-2
#: relative size of the perturbation of the second verification point
PERTURBATION = 0.1
#: relative size of the move to the generic point where find_laws ranks the laws and counts (small: it must stay in
#: theta's region, e.g. keep every ReLU unit as alive as at theta, while breaking the ties of an initialisation)
COUNT_PERTURBATION = 0.01


@dataclass(frozen=True)
class CheckedLaw:
    """A law with its verification on a model: status and worst residual."""

    law: Law
    status: str
    max_residual: float

    @property
    def family(self) -> str | None:
        """The law's family."""
        return self.law.family

    @property
    def module(self) -> str | None:
        """The module the law belongs to."""
        return self.law.module

    @property
    def verified(self) -> bool:
        """True when exact (residual at round-off)."""
        return self.status == "exact"

    @property
    def approximate(self) -> bool:
        """True when it holds only approximately, for a known cause."""
        return self.status == "approximate"

    def as_dict(self) -> dict:
        """One entry of ``laws`` in ``conslaw laws --json`` (``kind`` = the family)."""
        return {**self.law.as_dict(), "kind": self.law.family, "count": 1, "verified": self.verified,
                "approximate": self.approximate, "status": self.status, "max_residual": self.max_residual,
                "cause": self.law.approximate_cause if self.approximate else None}

    def __repr__(self) -> str:
        from ..display import truncate

        return f"CheckedLaw({self.status}, residual {self.max_residual:.1e}: {truncate(self.law.formula)})"

    def _repr_latex_(self) -> str:
        from ..display import law_latex

        return f"${law_latex(self.law)}$ ({self.status}, residual {self.max_residual:.1e})"


def classify(law: Law, residual: float) -> str:
    """``exact``, ``approximate`` or ``failed`` from the residual and the law's declared cause."""
    if residual < EXACT:
        return "exact"
    if law.approximate_cause is not None and residual < APPROXIMATE:
        return "approximate"
    return "failed"


def perturbed(space: ParamSpace, theta: torch.Tensor, generator: torch.Generator,
              size: float = PERTURBATION) -> torch.Tensor:
    """theta moved by ``size`` times each parameter's rms (the model's rms for all-zero parameters)."""
    overall = float(theta.square().mean().sqrt()) or 1.0
    out = theta.clone()
    for name in space.names:
        sl = space.slice(name)
        scale = float(theta[sl].square().mean().sqrt()) or overall
        out[sl] += size * scale * torch.randn(sl.stop - sl.start, generator=generator, dtype=DTYPE)
    return out


def check_laws(laws: Sequence[Law], points: Iterable[tuple[torch.Tensor, torch.Tensor | Iterable[torch.Tensor]]],
               ) -> list[CheckedLaw]:
    """Every law's worst residual over the (theta, fields at theta) pairs, and its status.

    The residual is :func:`conslaw.laws.verify.law_residual`, computed for all laws at once per field by
    :func:`conslaw.laws.verify.batched_residuals`; a point's fields may be an (n, D) tensor or an iterable of
    length-D fields evaluated one at a time (then a large model holds one field, not n).

    Args:
        laws: the laws.
        points: pairs (theta, (n, D) fields at theta or an iterable of fields at theta).
    """
    worst = np.zeros(len(laws))
    for theta, fields in points:
        np.maximum(worst, batched_residuals(laws, fields, theta), out=worst)
    return [CheckedLaw(law, classify(law, float(r)), float(r)) for law, r in zip(laws, worst, strict=True)]

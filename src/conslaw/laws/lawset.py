"""LawSet: an ordered collection of laws, their joint rank (Def. 2.10) and residuals at theta."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from ..fields import FieldSource, RestrictedFields
from ..params import DTYPE, ParamSpace
from ..rank import DEFAULT_RTOL, RankResult, numerical_rank
from .law import Law
from .verify import residuals


class LawSet:
    """An ordered collection of laws on ``space`` with their joint rank at theta.

    Args:
        space: the parameter space the laws are functions on.
        laws: the laws.
    """

    def __init__(self, space: ParamSpace, laws: Iterable[Law] = ()) -> None:
        self.space = space
        self.laws = list(laws)

    def __len__(self) -> int:
        return len(self.laws)

    def __iter__(self) -> Iterator[Law]:
        return iter(self.laws)

    def __getitem__(self, i: int) -> Law:
        return self.laws[i]

    def __repr__(self) -> str:
        return f"LawSet({len(self.laws)} laws on D={self.space.D})"

    def _repr_html_(self) -> str:
        from ..display import law_rows, laws_table

        return laws_table(law_rows(self.laws), f"{len(self.laws)} laws on D = {self.space.D}",
                          ("name", "formula", "family"))

    def values(self, theta: torch.Tensor) -> torch.Tensor:
        """h(theta) for every law."""
        return torch.stack([law.value(theta) for law in self.laws]) if self.laws else torch.zeros(0)

    def gradients(self, theta: torch.Tensor) -> torch.Tensor:
        """(number of laws, D): the closed-form gradients at theta."""
        if not self.laws:
            return torch.zeros(0, self.space.D, dtype=DTYPE)
        return torch.stack([law.grad(theta) for law in self.laws])

    def rank(self, theta: torch.Tensor, rtol: float = DEFAULT_RTOL) -> RankResult:
        """Number of independent laws at theta (Def. 2.10), with the spectral gap."""
        return numerical_rank(self.gradients(theta), rtol)

    def residuals(self, source: FieldSource, theta: torch.Tensor, n: int = 64,
                  generator: torch.Generator | None = None) -> np.ndarray:
        """Per law, the residual of :mod:`conslaw.laws.verify` against n sampled fields of ``source``.

        Args:
            source: the fields.
            theta: the point.
            n: number of sampled fields.
            generator: randomness of the sampled fields (seed 0 when None).
        """
        generator = generator or torch.Generator().manual_seed(0)
        chis = source.evaluate(theta, source.sample(n, generator))
        return residuals(self.laws, chis, theta)

    def restrict(self, source: RestrictedFields, eta: torch.Tensor) -> LawSet:
        """The laws touching only ``source``'s block, as functions of the block's coordinates.

        The other parameters are fixed at ``eta``: a law of the block does not depend on them.

        Args:
            source: the restricted fields (their block and index maps).
            eta: values of the other parameters.
        """
        inside = [law for law in self.laws if set(law.params) <= set(source.block)]

        def restricted(law: Law) -> Law:
            return Law(name=law.name, formula=law.formula, params=law.params, origin=law.origin,
                       family=law.family, module=law.module, unit=law.unit,
                       value_fn=lambda t: law.value(source.full_theta(t, eta)),
                       grad_fn=lambda t: law.grad(source.full_theta(t, eta))[source.block_index])

        return LawSet(source.space, [restricted(law) for law in inside])

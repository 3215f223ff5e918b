"""Fields of a reparametrization: chi_a(theta) = dphi(theta)^T a (paper eq. 9).

With P_ell = I as in Thm 3.4 and Thm 3.8, W_theta = range dphi(theta)^T.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.func import grad

from ..errors import ConslawError
from ..params import DTYPE, ParamSpace
from .base import FieldSource, Params


class ReparamFields(FieldSource):
    """chi_a(theta) = dphi(theta)^T a for a reparametrization phi: R^D -> R^d (eq. 9).

    By default a ~ N(0, I_d) and chi_a = grad_theta <phi(theta), a>. A block
    whose phi is large (path liftings: d = product of the widths) can pass
    ``pairing(params, c)`` = <phi(theta), a(c)> and ``sample_coefficients``
    for a structured random a(c) (e.g. rank-one tensors) whose values span
    R^d: the fields then span the same W at O(D) cost per sample.

    Args:
        space: the parameter space.
        phi: the reparametrization, params -> tensor (flattened to R^d).
        pairing: optional fast <phi(theta), a(c)>.
        sample_coefficients: sampler of c for ``pairing``: (n, generator) -> batched c.
    """

    label = "reparam"
    gradient = True  # chi_a = grad_theta <phi(theta), a>

    def __init__(self, space: ParamSpace, phi: Callable[[Params], torch.Tensor] | None = None,
                 pairing: Callable[[Params, Any], torch.Tensor] | None = None,
                 sample_coefficients: Callable[[int, torch.Generator], Any] | None = None) -> None:
        self.space = space
        self.phi = phi
        if pairing is None:
            if phi is None:
                raise ConslawError("ReparamFields got neither phi nor pairing",
                                   "pass phi (params -> tensor), or pairing with sample_coefficients")
            self.d = int(phi(space.unflatten(torch.zeros(space.D, dtype=DTYPE))).numel())
            self._pairing = lambda params, a: torch.dot(phi(params).reshape(-1), a)
            self._sample = lambda n, gen: torch.randn(n, self.d, generator=gen, dtype=DTYPE)
        else:
            if sample_coefficients is None:
                raise ConslawError("ReparamFields got a custom pairing without sample_coefficients",
                                   "pass sample_coefficients(n, generator) for the pairing's coefficients")
            self._pairing, self._sample = pairing, sample_coefficients

    def sample(self, n: int, generator: torch.Generator) -> Any:
        """Draw n coefficient vectors a (or structured coefficients c)."""
        return self._sample(n, generator)

    def field(self, theta: torch.Tensor, a: Any) -> torch.Tensor:
        """chi_a(theta) = grad_theta <phi(theta), a>."""
        return grad(lambda t: self._pairing(self.space.unflatten(t), a))(theta)

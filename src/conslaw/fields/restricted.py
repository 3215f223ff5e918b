"""Fields restricted to a block of parameters, the others resampled (Prop 4.3, eq. 25)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ConslawError
from ..params import DTYPE, ParamSpace
from .base import FieldSource


class RestrictedFields(FieldSource):
    """Fields of ``base`` restricted to a block of parameters theta_T, the others resampled (Prop 4.3).

    R_{theta_T}(W) = span over eta, x, w of d_{theta_T} g((theta_T, eta), x)^T w (eq. 25):
    each sampled field draws fresh values eta of the other parameters (from
    ``init``) and keeps the theta_T-components of a field of ``base`` at
    (theta_T, eta). Laws of these fields are the laws of the whole network that
    depend on theta_T only.

    Args:
        base: the field source of the whole network.
        block: names of the block's parameters.
        init: distribution of the resampled parameters eta (``gaussian`` or ``positive``).
    """

    def __init__(self, base: FieldSource, block: Sequence[str], init: str = "gaussian") -> None:
        unknown = [name for name in block if name not in base.space.shapes]
        if unknown or not block:
            raise ConslawError(f"block {list(block)} names parameters {unknown or 'none'} that do not exist",
                               f"choose among {base.space.names}")
        self.base = base
        self.block = [name for name in base.space.names if name in block]
        self.rest = [name for name in base.space.names if name not in block]
        self.space = ParamSpace({name: base.space.shapes[name] for name in self.block})
        self.rest_space = ParamSpace({name: base.space.shapes[name] for name in self.rest}) if self.rest else None
        self.init = init
        self.label = f"{base.label} restricted to {','.join(self.block)}"
        self.oversample = base.oversample
        # the block's part of a gradient, as a function of the block's coordinates: its Jacobian is the block's
        # diagonal block of the Hessian, symmetric
        self.gradient = base.gradient
        full = torch.arange(base.space.D)
        self.block_index = torch.cat([full[base.space.slice(name)] for name in self.block])
        self.rest_index = torch.cat([full[base.space.slice(name)] for name in self.rest]) if self.rest else None

    def sample(self, n: int, generator: torch.Generator) -> Any:
        """Draw n pairs (eta, base parameter): fresh other parameters for every field."""
        if self.rest_space is None:
            eta = torch.zeros(n, 0, dtype=DTYPE)
        else:
            eta = torch.stack([self.rest_space.sample(self.init, generator) for _ in range(n)])
        return eta, self.base.sample(n, generator)

    def sample_rest(self, generator: torch.Generator) -> torch.Tensor:
        """One draw of the other parameters eta (empty when the block is everything)."""
        if self.rest_space is None:
            return torch.zeros(0, dtype=DTYPE)
        return self.rest_space.sample(self.init, generator)

    def full_theta(self, theta_block: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        """The whole network's theta from the block's coordinates and the others' values eta."""
        full = torch.zeros(self.base.space.D, dtype=theta_block.dtype)
        full = full.index_copy(0, self.block_index, theta_block)
        if self.rest_index is not None:
            full = full.index_copy(0, self.rest_index, eta)
        return full

    def field(self, theta: torch.Tensor, p: Any) -> torch.Tensor:
        """The block's components of a base field at (theta_T, eta)."""
        eta, base_p = p
        return self.base.field(self.full_theta(theta, eta), base_p)[self.block_index]


def restrict(source: FieldSource, block: Sequence[str] | None, init: str = "gaussian") -> FieldSource:
    """``source`` restricted to ``block`` (Prop 4.3), or ``source`` itself when no block is given.

    Args:
        source: the fields of the whole network.
        block: parameter names, or None / empty for the whole network.
        init: distribution of the resampled other parameters.
    """
    return RestrictedFields(source, list(block), init) if block else source

"""Fields of the sign (Adam) flow: sign(chi_p(theta)) (eq. 12-13, App. R eq. 96).

Locally constant, so all their brackets vanish where they are defined.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import FieldSource


class SignFields(FieldSource):
    """sign(chi_p(theta)) for the fields chi_p of ``base``: the Adam flow (eq. 13, eq. 96).

    Args:
        base: the gradient-flow field source whose signs are taken.
    """

    oversample = 3.0

    def __init__(self, base: FieldSource) -> None:
        self.base = base
        self.space = base.space
        self.label = f"sign({base.label})"

    def sample(self, n: int, generator: torch.Generator) -> Any:
        """The base source's field parameters."""
        return self.base.sample(n, generator)

    def field(self, theta: torch.Tensor, p: Any) -> torch.Tensor:
        """sign(chi_p(theta))."""
        return torch.sign(self.base.field(theta, p))

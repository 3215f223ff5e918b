"""The field-source interface: a family of vector fields chi_p on parameter space.

A field source is a family of vector fields chi_p : R^D -> R^D indexed by a
parameter p that the source can sample at random. The generated Lie algebra
of their span is what the engine in :mod:`conslaw.lie` measures (Thm 2.11).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch.func import vmap

from ..params import ParamSpace

Params = dict[str, torch.Tensor]


class FieldSource(ABC):
    """A family of vector fields chi_p on the parameter space ``space``.

    Subclasses implement :meth:`sample` (random field parameters, batched
    along dimension 0) and :meth:`field` (chi_p(theta) for one parameter p).
    """

    space: ParamSpace
    #: name of the source in outputs (``reparam``, ``model``, ``sign(reparam)``, ``loss-gradient``)
    label: str = "fields"
    #: extra samples per level beyond (D - rank + margin): sources that are not
    #: linear in their random parameter (sign, loss gradients) need more to see rare patterns.
    oversample: float = 0.0
    #: True when every field is a gradient, chi_p = grad_theta s_p for a scalar s_p: its Jacobian D chi_p is
    #: then a Hessian, symmetric, and the Lie engine takes D chi_p(theta) v as a vector-Jacobian product
    #: (reverse over reverse), cheaper than a jvp through the gradient (see :func:`conslaw.lie.bracket_value`).
    #: Leave False for any other field (a sign, a preconditioned gradient): the engine then uses jvps only.
    #: Model-based sources set it False when the model holds a custom ``autograd.Function``, whose backward
    #: need not be the transpose of its forward derivative (:mod:`conslaw.fields.custom_functions`).
    gradient: bool = False

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> Any:
        """Draw n random field parameters, batched along dimension 0 (a pytree).

        Args:
            n: how many parameters.
            generator: the source of randomness (the engine's seed).
        """

    @abstractmethod
    def field(self, theta: torch.Tensor, p: Any) -> torch.Tensor:
        """Evaluate chi_p(theta) in R^D for one (unbatched) parameter p.

        Args:
            theta: the point, a float64 vector of length D.
            p: one field parameter (an unbatched slice of :meth:`sample`'s output).
        """

    def evaluate(self, theta: torch.Tensor, ps: Any) -> torch.Tensor:
        """Evaluate the fields at theta for a batch of parameters: an (n, D) tensor.

        Args:
            theta: the point, a float64 vector of length D.
            ps: a batch of field parameters as returned by :meth:`sample`.
        """
        return vmap(self.field, in_dims=(None, 0))(theta, ps)

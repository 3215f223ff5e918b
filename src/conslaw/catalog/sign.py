"""Laws of the sign (Adam) flow, eq. (12), App. R.

For U V^T with n = m = r = 1 the only law is |u| - |v| (App. R); for larger
shapes App. R finds none numerically.
"""

from __future__ import annotations

import torch

from ..laws import Law
from ..params import ParamSpace


def abs_difference_law(space: ParamSpace, first: str, second: str) -> Law:
    """h(theta) = |second| - |first| for two scalar parameters (App. R, n = m = r = 1)."""
    i, j = space.slice(first).start, space.slice(second).start

    def value(theta: torch.Tensor) -> torch.Tensor:
        return theta[j].abs() - theta[i].abs()

    def gradient(theta: torch.Tensor) -> torch.Tensor:
        g = torch.zeros_like(theta)
        g[j] = torch.sign(theta[j])
        g[i] = -torch.sign(theta[i])
        return g

    return Law(name=f"|{second}| - |{first}|", formula=f"|{second}| - |{first}|",
               params=(first, second), value_fn=value, grad_fn=gradient, family="sign flow")

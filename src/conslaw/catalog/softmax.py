"""Softmax classification layer with cross-entropy (KL) loss, eq. (20), Prop 3.11.

g(theta, x) = softmax(theta x), theta in R^{N x M} (N classes, M inputs). The
loss has V_ell = R^N; every field d_theta g^T w = (J_softmax^T w) x^T has
columns summing to zero, and the M column sums h_j = sum_i theta[i, j] are
exactly all the laws (Prop 3.11).
"""

from __future__ import annotations

import torch

from ..laws import linear_law, unit_slot
from ..params import ParamSpace
from .base import Architecture, positive_int


def softmax(classes: int, inputs: int) -> Architecture:
    """The softmax layer with N classes and M inputs and its M column-sum laws (Prop 3.11)."""
    n = positive_int(classes, "classes N")
    m = positive_int(inputs, "inputs M")
    space = ParamSpace({"W": (n, m)})
    def laws():
        return [linear_law(f"column {j}", [unit_slot(space, "W", 1, j)], family="translation", module="softmax",
                           unit=(j,)) for j in range(m)]

    return Architecture(
        name="softmax", label=f"softmax N={n} M={m}", config={"classes": n, "inputs": m},
        space=space, model=lambda p, x: torch.softmax(p["W"] @ x, dim=0), input_shape=(m,),
        laws=laws, expected=m, expected_source="Prop 3.11: M column sums")

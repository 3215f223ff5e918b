"""Dense ResNet x -> x + U_l relu(V_l x), l = 1..Q (eq. 21 without convolution).

V_l in R^{R x M}, U_l in R^{M x R}. Each block alone has R laws
|U_l[:,k]|^2 - |V_l[k,:]|^2 (Prop 3.2 + Prop 3.5); in the deep network these
block laws remain (Thm 4.6), and for Q = 2 and M > 1 there is no other law
(Sec 4.4, numerically in the paper): Q * R laws. With M = 1 extra laws can
appear (Ex 4.8).
"""

from __future__ import annotations

import torch

from ..laws import balance_law, unit_slot
from ..params import ParamSpace
from .base import Architecture, positive_int


def resnet(dim: int, width: int, blocks: int) -> Architecture:
    """The dense ResNet x -> x + U_l relu(V_l x), l = 1..Q, with its block laws."""
    m = positive_int(dim, "dim M")
    r = positive_int(width, "width R")
    q = positive_int(blocks, "blocks Q")
    shapes = {}
    for layer in range(1, q + 1):
        shapes[f"V{layer}"] = (r, m)
        shapes[f"U{layer}"] = (m, r)
    space = ParamSpace(shapes)

    def model(p, x):
        for layer in range(1, q + 1):
            x = x + p[f"U{layer}"] @ torch.relu(p[f"V{layer}"] @ x)
        return x

    def laws():
        return [balance_law(f"block {layer} neuron {k}", [unit_slot(space, f"U{layer}", 1, k)],
                            [unit_slot(space, f"V{layer}", 0, k)], family="rescaling", module=f"block {layer}",
                            unit=(k,))
                for layer in range(1, q + 1) for k in range(r)]

    expected, source = None, ""
    if q == 1:
        expected, source = r, "Prop 3.2 + Prop 3.5: R laws"
    elif q == 2 and m > 1:
        expected, source = q * r, "Sec 4.4 (Q = 2, M > 1): only the block laws, Q*R"
    return Architecture(
        name="resnet", label=f"resnet M={m} R={r} Q={q}", config={"dim": m, "width": r, "blocks": q},
        space=space, model=model, input_shape=(m,), laws=laws, expected=expected, expected_source=source,
        multiscale_inputs=True)

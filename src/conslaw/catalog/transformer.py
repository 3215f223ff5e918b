"""Transformer of Example 4.2: residual attention blocks (eq. 23) alternating with residual MLP blocks (eq. 22).

X in R^{N x E}. Layer l applies
    X <- X + softmax(X Q_l^T K_l X^T) X V_l^T O_l        (eq. 23, one head, Q, K, V, O in R^{D1 x E})
    X <- X + relu(X W_l^T) U_l^T                          (eq. 22, token-wise, W_l in R^{R x E}, U_l in R^{E x R})
No normalization (as in the paper). Block laws (Thm 4.6): the attention block
keeps Q Q^T - K K^T and V V^T - O O^T, the MLP block one law per hidden neuron.
"""

from __future__ import annotations

import torch

from ..laws import balance_law, unit_slot
from ..params import ParamSpace
from .base import Architecture, gram_difference_laws, positive_int


def transformer(tokens: int, dim: int, d1: int, hidden: int, layers: int) -> Architecture:
    """The transformer of Ex 4.2 with its per-block laws (Thm 4.6)."""
    n = positive_int(tokens, "tokens N")
    e = positive_int(dim, "dim E")
    d1 = positive_int(d1, "d1")
    r = positive_int(hidden, "hidden R")
    q = positive_int(layers, "layers")
    shapes = {}
    for layer in range(1, q + 1):
        for name in "QKVO":
            shapes[f"{name}{layer}"] = (d1, e)
        shapes[f"W{layer}"] = (r, e)
        shapes[f"U{layer}"] = (e, r)
    space = ParamSpace(shapes)

    def model(p, x):
        for layer in range(1, q + 1):
            scores = x @ p[f"Q{layer}"].T @ p[f"K{layer}"] @ x.T
            x = x + torch.softmax(scores, dim=-1) @ x @ p[f"V{layer}"].T @ p[f"O{layer}"]
            x = x + torch.relu(x @ p[f"W{layer}"].T) @ p[f"U{layer}"].T
        return x

    def laws():
        found = []
        for layer in range(1, q + 1):
            found += gram_difference_laws(space, f"Q{layer}", f"K{layer}",
                                          f"Q{layer} Q{layer}^T - K{layer} K{layer}^T", True, True)
            found += gram_difference_laws(space, f"V{layer}", f"O{layer}",
                                          f"V{layer} V{layer}^T - O{layer} O{layer}^T", True, True)
            found += [balance_law(f"mlp {layer} neuron {k}", [unit_slot(space, f"U{layer}", 1, k)],
                                  [unit_slot(space, f"W{layer}", 0, k)], family="rescaling", module=f"mlp {layer}",
                                  unit=(k,)) for k in range(r)]
        return found

    return Architecture(
        name="transformer", label=f"transformer N={n} E={e} d1={d1} R={r} layers={q}",
        config={"tokens": n, "dim": e, "d1": d1, "hidden": r, "layers": q}, space=space, model=model,
        input_shape=(n, e), laws=laws,
        notes=["Example 4.2: block laws per Thm 4.6; use --block to count the laws of one block"])

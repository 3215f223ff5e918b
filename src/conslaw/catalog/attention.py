"""Attention layers, eq. (18) (one head) and eq. (19) (H heads).

g(theta, X) = sum_h softmax(X Q_h^T K_h X^T) X V_h^T O_h with X in R^{N x E} and
Q, K, V, O in R^{D1 x E}, head h owning rows h*D1/H .. (h+1)*D1/H - 1.
One head: phi = (Q^T K, V^T O) gives W_theta = range dphi^T for N >= 2
(Thm 3.8) and the laws Q Q^T - K K^T, V V^T - O O^T are complete (Cor 3.9):
d1(d1+1) independent ones when (Q, K) and (V, O) have full rank (d1 <= 2E).
Several heads: the per-head laws hold (Cor 3.10); completeness is open, so
only the model's own fields are used (no phi).
"""

from __future__ import annotations

import torch

from ..errors import ConslawError
from ..params import ParamSpace
from .base import Architecture, gram_difference_laws, positive_int


def attention(tokens: int, dim: int, d1: int, heads: int = 1) -> Architecture:
    """Self-attention with N tokens of dimension E, D1 rows split into H heads."""
    n = positive_int(tokens, "tokens N")
    e = positive_int(dim, "dim E")
    d1 = positive_int(d1, "d1")
    h = positive_int(heads, "heads H")
    if d1 % h:
        raise ConslawError(f"{h} heads do not divide d1 = {d1}", "choose H dividing D1 (e.g. --heads 1)")
    dh = d1 // h
    space = ParamSpace({"Q": (d1, e), "K": (d1, e), "V": (d1, e), "O": (d1, e)})

    def model(p, x):
        out = torch.zeros_like(x)
        for k in range(h):
            rows = slice(k * dh, (k + 1) * dh)
            scores = x @ p["Q"][rows].T @ p["K"][rows] @ x.T
            out = out + torch.softmax(scores, dim=-1) @ x @ p["V"][rows].T @ p["O"][rows]
        return out

    def laws():
        found = []
        for k in range(h):
            tag = f"head {k}: " if h > 1 else ""
            found += gram_difference_laws(space, "Q", "K", f"{tag}Q Q^T - K K^T", True, True, k * dh, dh, head=k)
            found += gram_difference_laws(space, "V", "O", f"{tag}V V^T - O O^T", True, True, k * dh, dh, head=k)
        return found

    phi = None
    expected, source = None, ""
    notes = []
    if h == 1:
        phi = lambda p: torch.cat([(p["Q"].T @ p["K"]).reshape(-1), (p["V"].T @ p["O"]).reshape(-1)])  # noqa: E731
        if n >= 2 and d1 <= 2 * e:
            expected, source = d1 * (d1 + 1), "Cor 3.9 (N >= 2, d1 <= 2E): d1(d1+1)"
    else:
        notes.append("multi-head: per-head laws hold (Cor 3.10); the paper leaves completeness open")
    return Architecture(
        name="attention", label=f"attention N={n} E={e} d1={d1} H={h}",
        config={"tokens": n, "dim": e, "d1": d1, "heads": h}, space=space, model=model,
        input_shape=(n, e), laws=laws, phi=phi, expected=expected, expected_source=source, notes=notes)

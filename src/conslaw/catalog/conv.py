"""Multi-channel circular convolutional ReLU block, eq. (16), strided too (eq. 42, App. E).

Input x: C0 channels of P samples. Hidden channel j, position s (p1 = P / S
positions for stride S):
    h[j, s] = relu( sum_i sum_t v[j, i, t] x[i, (S s + t) mod P] )
Output channel k, position o (P positions; a transposed strided convolution,
which is the plain circular convolution when S = 1):
    y[k, o] = sum_j sum_s sum_t u[k, j, t] h[j, s] [o = (S s + t) mod P]
Both operators have the form of Assumption E.1 (every Q_i, P_i is a shifted
zero-padded injection), so Prop E.3 / Thm 3.6 give exactly C1 laws (eq. 17):
    h_j = sum_k |u[k, j, :]|^2 - sum_i |v[j, i, :]|^2.
phi is Lemma E.2's psi(theta) = phi_ReLU(T theta): the structured matrices U, V
and the per-hidden-unit outer products u_k v_k^T.
"""

from __future__ import annotations

import torch

from ..errors import ConslawError
from ..laws import balance_law, unit_slot
from ..params import DTYPE, ParamSpace
from .base import Architecture, positive_int


def shift_operator(size: int, positions: int, taps: int, stride: int) -> torch.Tensor:
    """E[o, s, t] = 1 where o = (stride * s + t) mod size."""
    e = torch.zeros(size, positions, taps, dtype=DTYPE)
    for s in range(positions):
        for t in range(taps):
            e[(stride * s + t) % size, s, t] = 1.0
    return e


def conv(channels, pixels: int, filters, stride: int = 1) -> Architecture:
    """The two-layer convolutional ReLU block with channels (C0, C1, C2) and filters (NV, NU)."""
    if len(channels) != 3:
        raise ConslawError(f"--channels takes three numbers C0 C1 C2, got {list(channels)}",
                           "e.g. --channels 2 3 2")
    if len(filters) != 2:
        raise ConslawError(f"--filters takes two numbers NV NU, got {list(filters)}", "e.g. --filters 3 2")
    c0, c1, c2 = (positive_int(c, f"channel count C{i}") for i, c in enumerate(channels))
    p = positive_int(pixels, "pixels P")
    nv, nu = positive_int(filters[0], "filter length NV"), positive_int(filters[1], "filter length NU")
    s = positive_int(stride, "stride S")
    if p % s:
        raise ConslawError(f"stride {s} does not divide the number of pixels {p}",
                           "choose P a multiple of S")
    for n, what in ((nv, "NV"), (nu, "NU")):
        if n > p:
            raise ConslawError(f"filter length {what} = {n} is longer than the signal P = {p}",
                               f"use {what} <= P")
    p1 = p // s
    space = ParamSpace({"u": (c2, c1, nu), "v": (c1, c0, nv)})
    ev = shift_operator(p, p1, nv, s)  # input pixel <- (hidden position, tap)
    eu = shift_operator(p, p1, nu, s)  # output pixel <- (hidden position, tap)

    def model(params, x):
        pre = torch.einsum("jit,pst,ip->js", params["v"], ev, x)
        return torch.einsum("kjt,ost,js->ko", params["u"], eu, torch.relu(pre))

    def phi(params):
        big_u = torch.einsum("kjt,ost->kojs", params["u"], eu).reshape(c2 * p, c1 * p1)
        big_v = torch.einsum("jit,pst->ipjs", params["v"], ev).reshape(c0 * p, c1 * p1)
        return torch.einsum("ah,bh->hab", big_u, big_v).reshape(-1)

    def laws():
        return [balance_law(f"channel {j}", [unit_slot(space, "u", 1, j)], [unit_slot(space, "v", 0, j)],
                            family="rescaling", module="conv", unit=(j,)) for j in range(c1)]

    return Architecture(
        name="conv", label=f"conv C=({c0},{c1},{c2}) P={p} filters=({nv},{nu}) stride={s}",
        config={"channels": [c0, c1, c2], "pixels": p, "filters": [nv, nu], "stride": s},
        space=space, model=model, input_shape=(c0, p), laws=laws, phi=phi,
        expected=c1, expected_source="Thm 3.6 / Prop E.3: C1 laws (eq. 17)", multiscale_inputs=True)

"""Deep linear networks x -> W_q ... W_1 x (paper Sec 3.2, eq. 15 with sigma = id).

Widths are listed input first: W_l has shape (n_l, n_{l-1}) as in nn.Linear.
phi(theta) = W_q ... W_1 satisfies W_theta = range dphi^T when V_ell = R^n
(Thm 3.4: span_{x,w} dP^T(w x^T) covers all of dP^T). Laws (Prop 3.5): for
every hidden layer l, the entries of W_l W_l^T - W_{l+1}^T W_{l+1}, i.e.
<u_k, u_l> - <v_k, v_l> in the paper's U V^T notation; for two layers
[m, r, n] with r <= n + m there are exactly r(r+1)/2 independent ones.
"""

from __future__ import annotations

from functools import reduce

from ..errors import ConslawError
from ..params import ParamSpace
from .base import Architecture, gram_difference_laws, positive_int


def check_widths(widths, arch: str) -> list[int]:
    """The widths as positive integers, at least two of them, or a clear error."""
    widths = [positive_int(w, f"{arch} width #{i} (W{i})") for i, w in enumerate(widths)]
    if len(widths) < 2:
        raise ConslawError(f"{arch} needs at least two widths (input and output), got {widths}",
                           f"list widths input first, e.g. 'conslaw count {arch} 3 4 2'")
    return widths


def linear(*widths: int) -> Architecture:
    """The deep linear network with the given widths (input first)."""
    widths = check_widths(widths, "linear")
    q = len(widths) - 1
    space = ParamSpace({f"W{layer}": (widths[layer], widths[layer - 1]) for layer in range(1, q + 1)})

    def product(p):
        return reduce(lambda acc, layer: p[f"W{layer}"] @ acc, range(2, q + 1), p["W1"])

    def laws():
        found = []
        for layer in range(1, q):
            label = f"W{layer} W{layer}^T - W{layer + 1}^T W{layer + 1}"
            found += gram_difference_laws(space, f"W{layer}", f"W{layer + 1}", label, rows_left=True,
                                          rows_right=False)
        return found

    expected, source = None, ""
    if q == 2 and widths[1] <= widths[0] + widths[2]:
        r = widths[1]
        expected, source = r * (r + 1) // 2, "Prop 3.5 (linear, r <= n + m): r(r+1)/2"
    sign_laws, notes = None, []
    if widths == [1, 1, 1]:
        from .sign import abs_difference_law
        sign_laws = [abs_difference_law(space, "W1", "W2")]
    return Architecture(
        name="linear", label=f"linear {widths}", config={"widths": widths}, space=space,
        model=lambda p, x: product(p) @ x, input_shape=(widths[0],), laws=laws,
        phi=lambda p: product(p).reshape(-1), sign_laws=sign_laws,
        expected=expected, expected_source=source, notes=notes)


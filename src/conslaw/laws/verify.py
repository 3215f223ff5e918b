"""The one verifier: how far a law's gradient is from orthogonal to sampled fields (Prop 2.3).

For a law h and fields chi_1..chi_n at theta, the residual is

    max_i |<grad h(theta), chi_i(theta)>| / (|grad h(theta)| |chi_i(theta)|_S),

where |chi|_S is the norm of the field on the law's own support S (the
coordinates h depends on). Dividing by the field's share on S, not by its full
norm, keeps a law from passing just because the field is large elsewhere. The
share is floored at :data:`SHARE_FLOOR` times the field's norm: a field whose
part on S is round-off (a coordinate the loss ignores) measures that round-off
against the field, not against itself. A law
is exact when its residual is at round-off for every field. Callers check at
more than one theta (see :mod:`conslaw.nn.status`) so that a degenerate point,
where every field vanishes on S, cannot make a law pass vacuously.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .law import Law

#: a residual below this is round-off (a verified, exact law)
EXACT = 1e-10
#: the field's share on a law's support is floored at this fraction of its full norm
SHARE_FLOOR = 1e-4


def law_residual(law: Law, fields: torch.Tensor, theta: torch.Tensor,
                 sparse: tuple[torch.Tensor, torch.Tensor] | None = None,
                 field_norms: torch.Tensor | None = None) -> float:
    """max over the rows chi of ``fields`` of |<grad h, chi>| / (|grad h| |chi on supp h|).

    Args:
        law: the law h.
        fields: an (n, D) tensor of fields at theta.
        theta: the point.
        sparse: (support, gradient on it) when already computed.
        field_norms: the norms of the rows of ``fields`` when already computed (many laws, one set of fields).
    """
    support, g = sparse if sparse is not None else law.sparse_grad(theta)
    gnorm = g.norm()
    if gnorm == 0 or fields.shape[0] == 0:
        return 0.0
    share = fields[:, support]
    norms = fields.norm(dim=1) if field_norms is None else field_norms
    denominator = torch.maximum(share.norm(dim=1), SHARE_FLOOR * norms)
    cos = (share @ g).abs() / (gnorm * denominator).clamp_min(1e-300)
    return float(cos.max())


def residuals(laws: Sequence[Law], fields: torch.Tensor, theta: torch.Tensor) -> np.ndarray:
    """:func:`law_residual` of every law against the same fields.

    Args:
        laws: the laws.
        fields: an (n, D) tensor of fields at theta.
        theta: the point.
    """
    norms = fields.norm(dim=1)
    return np.array([law_residual(law, fields, theta, field_norms=norms) for law in laws])

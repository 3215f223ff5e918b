"""Laws broken only by a normalization's eps, told apart from wrong laws by a re-check at eps -> 0.

The weights feeding a normalization (BatchNorm in training, LayerNorm, GroupNorm, RMSNorm) are scale
invariant exactly at eps = 0: for y = (x - mu) / sqrt(var + eps), scaling unit k's weights by c > 0
gives

    y_k(c) = (x_k - mu_k) / sqrt(var_k + eps / c^2),

so the conserved |W_k|^2 (Prop 3.5 with a normalization in place of the ReLU) is broken at rate
O(eps / var_k) (:mod:`conslaw.nn.normalization`). On a unit whose variance is small on the sampled
batch (a depthwise channel at 1 x 1 resolution, a channel most of whose inputs a ReLU killed),
eps / var_k is not small and the residual can exceed :data:`~conslaw.nn.status.APPROXIMATE`,
although eps is still the whole cause. :func:`recheck_eps` measures that: it evaluates the same
loss-gradient fields, at the same points on the same batches, with every normalization's eps
multiplied by :data:`EPS_SHRINK`. A law that failed with an eps cause and whose residual there is
at round-off (< :data:`~conslaw.laws.EXACT`) is ``approximate`` (its residual at the model's eps is
kept); any other stays ``failed``. Nothing is assumed from the family: the re-check can fail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..fields import LossGradFields
from ..laws import EXACT
from ..laws.verify import batched_residuals
from .status import CheckedLaw

#: every normalization's eps is multiplied by this in the re-check (> 0: BatchNorm refuses eps = 0 in training)
EPS_SHRINK = 1e-12
#: module attributes holding a normalization's eps (torch's norms; Hugging Face RMSNorms)
EPS_ATTRS = ("eps", "variance_epsilon")


def _is_normalization(m: nn.Module) -> bool:
    from .norms import is_rmsnorm

    return isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)) \
        or is_rmsnorm(m)


@contextlib.contextmanager
def shrunk_eps(model: nn.Module, factor: float = EPS_SHRINK) -> Iterator[int]:
    """Multiply the eps of every normalization of ``model`` by ``factor`` inside the block (restored after).

    Yields the number of eps values changed.
    """
    saved = []
    for m in model.modules():
        if not _is_normalization(m):
            continue
        for attr in EPS_ATTRS:
            value = getattr(m, attr, None)
            if isinstance(value, float) and value > 0:
                saved.append((m, attr, value))
                setattr(m, attr, value * factor)
    try:
        yield len(saved)
    finally:
        for m, attr, value in saved:
            setattr(m, attr, value)


def recheck_eps(checked: Sequence[CheckedLaw], model: nn.Module, fields: LossGradFields,
                draws: Sequence[tuple[torch.Tensor, Any]]) -> tuple[list[CheckedLaw], str | None]:
    """Re-label failed laws with an eps cause that hold at round-off once eps is shrunk (module docstring).

    Args:
        checked: the laws as first checked.
        model: the analysis copy whose fields ``fields`` are (its norms' eps are changed, then restored).
        fields: the loss-gradient fields.
        draws: the (theta, sampled batches) pairs of the first check.

    Returns:
        the laws with the re-labelled ones ``approximate``, and a note (None when none was re-checked).
    """
    suspects = [i for i, c in enumerate(checked) if c.status == "failed" and c.law.approximate_cause is not None]
    if not suspects:
        return list(checked), None
    worst = dict.fromkeys(suspects, 0.0)
    with shrunk_eps(model) as changed:
        if not changed:
            return list(checked), None
        laws = [checked[i].law for i in suspects]
        for theta, batches in draws:  # the same residual as check_laws, fields streamed (one held at a time)
            for i, res in zip(suspects, batched_residuals(laws, fields.rows(theta, batches), theta), strict=True):
                worst[i] = max(worst[i], float(res))
    out = list(checked)
    relabelled = [i for i in suspects if worst[i] < EXACT]
    for i in relabelled:
        out[i] = CheckedLaw(checked[i].law, "approximate", checked[i].max_residual)
    note = (f"eps re-check: {len(relabelled)} of {len(suspects)} laws above the approximate threshold with a "
            f"normalization's eps as cause hold at round-off with eps x {EPS_SHRINK:g} (labelled approximate: eps "
            f"is their whole cause)")
    if len(relabelled) < len(suspects):
        note += f"; the others stay failed (residual at eps x {EPS_SHRINK:g} up to " \
                f"{max(worst[i] for i in suspects if i not in relabelled):.1e})"
    return out, note

"""RMS normalizations: ``nn.RMSNorm`` and the Hugging Face ``*RMSNorm`` modules, recognised in one place.

RMSNorm(x) = x / sqrt(mean(x^2) + eps) * g over the last axis (Zhang & Sennrich 2019). Unlike
LayerNorm it does not remove the mean: a shift c 1 of its input is *not* removed, so a
writer of an RMSNorm-read stream has no translation law. It is scale invariant up to
eps: RMSNorm(c x) = RMSNorm(x) + O(eps / mean(x^2)) for c > 0 (exact at eps = 0), and its
weight g is an elementwise affine carrier (g_k scales output unit k), like a LayerNorm's gamma.

Only classes whose weight multiplies the normalized input as is are recognised (not Gemma's
``(1 + weight)``): ``nn.RMSNorm`` and the Hugging Face classes in :data:`HF_RMSNORMS`.
"""

from __future__ import annotations

import torch
from torch import nn

#: Hugging Face RMS normalizations computing weight * x / sqrt(mean(x^2) + variance_epsilon)
HF_RMSNORMS = ("LlamaRMSNorm", "MistralRMSNorm", "MixtralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "T5LayerNorm",
               "Phi3RMSNorm", "OlmoRMSNorm")


def is_rmsnorm(m: nn.Module | None) -> bool:
    """True for nn.RMSNorm over one trailing axis and the Hugging Face classes of :data:`HF_RMSNORMS`."""
    if isinstance(m, nn.RMSNorm):
        return len(m.normalized_shape) == 1
    return m is not None and type(m).__name__ in HF_RMSNORMS and hasattr(m, "variance_epsilon")


def rms_units(m: nn.Module) -> int:
    """The number of normalized features."""
    if isinstance(m, nn.RMSNorm):
        return m.normalized_shape[0]
    return m.weight.shape[0]


def rms_eps(m: nn.Module) -> float:
    """The eps added to mean(x^2) (nn.RMSNorm's None: the machine epsilon of float64, the analysis dtype)."""
    eps = m.eps if isinstance(m, nn.RMSNorm) else m.variance_epsilon
    return float(torch.finfo(torch.float64).eps) if eps is None else float(eps)


def has_weight(m: nn.Module) -> bool:
    """True when the RMSNorm has an elementwise weight."""
    return isinstance(getattr(m, "weight", None), torch.Tensor)


def is_feature_norm(m: nn.Module | None, units: int) -> bool:
    """A LayerNorm or RMSNorm over the last axis of ``units`` features (scale invariant up to eps)."""
    if isinstance(m, nn.LayerNorm):
        return tuple(m.normalized_shape) == (units,) and not is_layernorm2d(m)
    return is_rmsnorm(m) and rms_units(m) == units


def norm_eps(m: nn.Module) -> float:
    """eps of a LayerNorm or RMSNorm."""
    return float(m.eps) if isinstance(m, nn.LayerNorm) else rms_eps(m)


def is_layernorm2d(m: nn.Module | None) -> bool:
    """timm's ``LayerNorm2d`` (a LayerNorm over the channels of an NCHW tensor, at every position)."""
    return isinstance(m, nn.LayerNorm) and type(m).__name__ == "LayerNorm2d" and len(m.normalized_shape) == 1

"""Normalization layers written with elementary ops, for exact higher derivatives.

The Lie engine differentiates the fields three and more times (nested
``torch.func.jvp`` over ``grad``). In torch 2.13 (CPU, float64) the nested
forward-mode derivatives of some fused native kernels are wrong, while their
values and first derivatives are right; :data:`UNVERIFIED_NATIVE_OPS` lists
them with the error measured against central finite differences. The
composites below compute the same function from ops whose derivatives of
every order are right (mean, subtraction, product, ``rsqrt``):

    mu = mean_S(x),   c = x - mu,   var = mean_S(c * c)   (biased, as the kernels)
    y  = c * rsqrt(var + eps) * weight + bias

where S is the set of reduced dimensions: the trailing ``normalized_shape``
(layer_norm), the batch and spatial dimensions per channel (batch_norm in
training), the spatial dimensions per sample and channel (instance_norm), the
channels of a group and the spatial dimensions (group_norm). rms_norm is
``x * rsqrt(mean_S(x * x) + eps) * weight``. Eval-mode batch_norm and
``use_input_stats=False`` instance_norm use the running statistics in place of
(mu, var) and never update them; in training mode the composites never update
running statistics either (the native kernels would, in place).

gelu with ``approximate='tanh'`` is 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
from ``tanh``, mul and add (the native kernel's third derivative is NaN for
|x| >= 30).

The consequence is not small: for Linear(3,4)-LayerNorm(4)-Linear(4,2) the
engine counts 4 conservation laws with the native kernel and the right 8 with
the composites, both with a clean spectral gap (> 1e7); likewise for
BatchNorm1d in training mode. :func:`conslaw.derivative_check.derivative_check`
detects such ops.

``eps = 0`` is allowed: the output is then exactly invariant under x -> a x,
a > 0 (and undefined where var = 0, as for the kernels).

:func:`composite_ops` is a ``TorchFunctionMode``: inside ``with
composite_ops():`` every call of ``torch.nn.functional.<name>`` or
``torch.<name>`` for a name in :data:`UNVERIFIED_NATIVE_OPS` runs the
composite, whoever calls it (``nn.LayerNorm``, ``nn.BatchNorm2d``, Hugging
Face modules, hand-written code), also under ``functional_call``, ``vmap``,
``jvp`` and ``grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .errors import ConslawError

#: native ops routed to composites by :func:`composite_ops`, and why. Errors are relative, against central
#: finite differences in float64, torch 2.13 CPU, random inputs: "jvp^k" = k nested torch.func.jvp of the op
#: (constant tangents), "brackets" = level-3 Lie brackets of the loss-gradient fields of Linear(3,4)-norm-Linear(4,2)
#: by conslaw.derivative_check (composites: jvp^3 <= 2e-9, brackets <= 1.1e-10).
UNVERIFIED_NATIVE_OPS: dict[str, str] = {
    "layer_norm": "wrong nested forward derivatives: jvp^2 1.0, jvp^3 0.90 (no affine 1.15, 0.98); "
                  "brackets 1.4e-2 (no affine 5.3e-2)",
    "batch_norm": "training mode wrong: jvp^2 0.49, jvp^3 1.2, brackets 9.9e-2 (eval mode right; one function "
                  "serves both)",
    "instance_norm": "wrong nested forward derivatives: jvp^2 0.89, jvp^3 0.40; brackets 2.4e-2",
    "gelu": "approximate='tanh': 3rd derivative NaN for |x| >= 30 (true value ~0), so brackets NaN; "
            "approximate='none' is right and stays native",
    "group_norm": "right on CPU (jvp^3 2.4e-10, brackets 7e-9); routed so that every norm takes the composite "
                  "path whatever the backend's fused kernel (other devices unmeasured)",
    "rms_norm": "right on CPU (jvp^3 1.2e-10, brackets 4e-11; the CPU op is itself composite); routed like "
                "group_norm",
}


def _check_affine(name: str, tensor: torch.Tensor | None, shape: tuple[int, ...], op: str) -> None:
    if tensor is not None and tuple(tensor.shape) != shape:
        raise ConslawError(f"{op}: {name} has shape {tuple(tensor.shape)}, expected {shape}",
                           f"pass a {name} of shape {shape} or None")


def _per_channel(t: torch.Tensor, dim: int) -> torch.Tensor:
    """A (C,) tensor shaped (1, C, 1, ..., 1) against an input of ``dim`` dimensions."""
    return t.reshape(1, -1, *([1] * (dim - 2)))


def _normalize(x: torch.Tensor, dims: tuple[int, ...], eps: float) -> torch.Tensor:
    """(x - mean_S x) * rsqrt(mean_S (x - mean_S x)^2 + eps), S = ``dims``."""
    c = x - x.mean(dims, keepdim=True)
    return c * torch.rsqrt((c * c).mean(dims, keepdim=True) + eps)


def _values_per_statistic(input: torch.Tensor, skip: int) -> int:
    return math.prod(s for i, s in enumerate(input.shape) if i != skip)


def _trailing_shape(input: torch.Tensor, normalized_shape: int | Sequence[int], op: str) -> tuple[tuple, int]:
    """(normalized_shape as a tuple, its length), or a clear error when the input does not end with it."""
    shape = (int(normalized_shape),) if isinstance(normalized_shape, int) else tuple(int(s) for s in normalized_shape)
    k = len(shape)
    if k == 0 or input.dim() < k or tuple(input.shape[input.dim() - k:]) != shape:
        raise ConslawError(f"{op}: input of shape {tuple(input.shape)} does not end with normalized_shape "
                           f"{shape}", "pass the sizes of the input's last dimensions as normalized_shape")
    return shape, k


def layer_norm(input: torch.Tensor, normalized_shape: int | Sequence[int], weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Composite ``F.layer_norm``: statistics over the trailing ``normalized_shape`` dimensions."""
    shape, k = _trailing_shape(input, normalized_shape, "layer_norm")
    _check_affine("weight", weight, shape, "layer_norm")
    _check_affine("bias", bias, shape, "layer_norm")
    y = _normalize(input, tuple(range(-k, 0)), eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _channel_norm(op: str, input: torch.Tensor, running_mean: torch.Tensor | None,
                  running_var: torch.Tensor | None, weight: torch.Tensor | None, bias: torch.Tensor | None,
                  use_batch_stats: bool, dims: tuple[int, ...], eps: float) -> torch.Tensor:
    """Per-channel normalization (channel = dimension 1) with batch or running statistics, then affine."""
    C = input.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        _check_affine(name, t, (C,), op)
    dim = input.dim()
    if use_batch_stats:
        y = _normalize(input, dims, eps)
    else:
        if running_mean is None or running_var is None:
            raise ConslawError(f"{op}: running statistics are needed without batch statistics, got None",
                               "pass running_mean and running_var, or use batch statistics")
        y = (input - _per_channel(running_mean, dim)) * torch.rsqrt(_per_channel(running_var, dim) + eps)
    if weight is not None:
        y = y * _per_channel(weight, dim)
    if bias is not None:
        y = y + _per_channel(bias, dim)
    return y


def batch_norm(input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
               weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
               momentum: float | None = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """Composite ``F.batch_norm`` over channel dimension 1.

    ``training``: statistics of the batch over dimensions (0, 2, 3, ...); the running
    statistics are neither read nor updated (``momentum`` is accepted and unused).
    Otherwise: y = (x - running_mean) * rsqrt(running_var + eps), then the affine map.
    """
    if input.dim() < 2:
        raise ConslawError(f"batch_norm: input of shape {tuple(input.shape)} has no channel dimension",
                           "pass an input of shape (N, C, ...)")
    if training and _values_per_statistic(input, 1) == 1:
        raise ConslawError(f"batch_norm: one value per channel in training mode (input {tuple(input.shape)}): "
                           "the batch variance is 0", "use a batch of 2 or more, or eval mode")
    dims = (0, *range(2, input.dim()))
    return _channel_norm("batch_norm", input, running_mean, running_var, weight, bias, training, dims, eps)


def instance_norm(input: torch.Tensor, running_mean: torch.Tensor | None = None,
                  running_var: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None, use_input_stats: bool = True, momentum: float = 0.1,
                  eps: float = 1e-5) -> torch.Tensor:
    """Composite ``F.instance_norm``: statistics per sample and channel over dimensions (2, 3, ...).

    Running statistics are read only when ``use_input_stats`` is False and never updated.
    """
    if input.dim() < 2:
        raise ConslawError(f"instance_norm: input of shape {tuple(input.shape)} has no channel dimension",
                           "pass an input of shape (N, C, L, ...)")
    if use_input_stats and math.prod(input.shape[2:]) <= 1:
        raise ConslawError(f"instance_norm: one spatial element per channel (input {tuple(input.shape)}): "
                           "the instance variance is 0", "pass an input of shape (N, C, L, ...) with L > 1")
    dims = tuple(range(2, input.dim()))
    return _channel_norm("instance_norm", input, running_mean, running_var, weight, bias, use_input_stats, dims,
                         eps)


def group_norm(input: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Composite ``F.group_norm``: statistics per sample over the channels of a group and dimensions 2, 3, ..."""
    if input.dim() < 2 or num_groups < 1 or input.shape[1] % num_groups:
        raise ConslawError(f"group_norm: {num_groups} groups for an input of shape {tuple(input.shape)}",
                           "pass an input (N, C, ...) whose C is a multiple of num_groups >= 1")
    N, C = input.shape[0], input.shape[1]
    if math.prod(input.shape) // num_groups == 1:
        raise ConslawError(f"group_norm: one value per group (input {tuple(input.shape)}, {num_groups} groups)",
                           "use fewer groups or a larger input")
    _check_affine("weight", weight, (C,), "group_norm")
    _check_affine("bias", bias, (C,), "group_norm")
    y = _normalize(input.reshape(N, num_groups, -1), (2,), eps).reshape(input.shape)
    if weight is not None:
        y = y * _per_channel(weight, input.dim())
    if bias is not None:
        y = y + _per_channel(bias, input.dim())
    return y


def rms_norm(input: torch.Tensor, normalized_shape: int | Sequence[int], weight: torch.Tensor | None = None,
             eps: float | None = None) -> torch.Tensor:
    """Composite ``F.rms_norm``: x * rsqrt(mean(x^2) + eps) * weight; eps None is the dtype's machine epsilon."""
    shape, k = _trailing_shape(input, normalized_shape, "rms_norm")
    _check_affine("weight", weight, shape, "rms_norm")
    if eps is None:
        eps = torch.finfo(input.dtype).eps
    y = input * torch.rsqrt((input * input).mean(tuple(range(-k, 0)), keepdim=True) + eps)
    return y if weight is None else y * weight


def gelu(input: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``F.gelu``: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) by composites for ``approximate='tanh'``.

    ``approximate='none'`` (x Phi(x)) has right derivatives and runs natively.
    """
    if approximate == "none":
        return F.gelu(input)  # the mode is off inside __torch_function__: this is the native op
    if approximate != "tanh":
        raise ConslawError(f"gelu: approximate={approximate!r}", "use approximate='none' or 'tanh'")
    inner = math.sqrt(2.0 / math.pi) * (input + 0.044715 * input * input * input)
    return 0.5 * input * (1.0 + torch.tanh(inner))


# torch.<name> (aten argument order) -> the composites
def _torch_layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return layer_norm(input, normalized_shape, weight, bias, eps)


def _torch_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled=True):
    return batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def _torch_instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps,
                         cudnn_enabled=True):
    return instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)


def _torch_group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    return group_norm(input, num_groups, weight, bias, eps)


#: name -> ((torch.nn.functional.<name>, composite), (torch.<name>, composite))
COMPOSITES: dict[str, tuple[tuple[Callable, Callable], ...]] = {
    "layer_norm": ((F.layer_norm, layer_norm), (torch.layer_norm, _torch_layer_norm)),
    "batch_norm": ((F.batch_norm, batch_norm), (torch.batch_norm, _torch_batch_norm)),
    "instance_norm": ((F.instance_norm, instance_norm), (torch.instance_norm, _torch_instance_norm)),
    "group_norm": ((F.group_norm, group_norm), (torch.group_norm, _torch_group_norm)),
    "rms_norm": ((F.rms_norm, rms_norm), (torch.rms_norm, rms_norm)),
    "gelu": ((F.gelu, gelu),),
}


class CompositeOps(TorchFunctionMode):
    """Routes the native ops named in ``ops`` to their composites while the mode is active."""

    def __init__(self, ops: Sequence[str] | None = None) -> None:
        super().__init__()
        names = list(UNVERIFIED_NATIVE_OPS) if ops is None else list(ops)
        unknown = [n for n in names if n not in COMPOSITES]
        if unknown:
            raise ConslawError(f"no composite for {unknown}", f"choose among {sorted(COMPOSITES)}")
        self.routes = {native: composite for n in names for native, composite in COMPOSITES[n]}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # the mode is switched off while this runs: the composites' own ops go to torch directly
        return self.routes.get(func, func)(*args, **(kwargs or {}))


def composite_ops(ops: Sequence[str] | None = None) -> CompositeOps:
    """``with composite_ops():`` computes the ops of :data:`UNVERIFIED_NATIVE_OPS` (or ``ops``) by composites."""
    return CompositeOps(ops)

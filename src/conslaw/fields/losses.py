"""The training losses of :class:`conslaw.fields.LossGradFields`: one table of built-ins, and user callables.

A :class:`Loss` is the loss function ``fn(output, target) -> scalar`` with the
way its random targets are drawn (the fields are gradients of the loss over
random batches Z = (inputs, targets), Sec 4.4). The built-ins (:data:`BUILTIN_LOSSES`):

- ``mse``: mean of (output - target)^2, Gaussian targets shaped like the output;
- ``cross_entropy``: outputs (batch, classes) with class targets (batch,), or
  (batch, seq, vocab) with token targets (batch, seq) (a language model's
  next-token loss: any targets; the target -100 is ignored, as in
  ``F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), ignore_index=-100)``).

A user callable ``loss(output, target)`` gets Gaussian targets shaped like the
output; pass a :class:`Loss` to draw other targets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConslawError
from ..params import DTYPE

#: the target that cross-entropy ignores (as torch and Hugging Face do)
IGNORE_INDEX = -100

TargetSampler = Callable[[int, tuple[int, ...], torch.Generator], torch.Tensor]


def gaussian_targets(n: int, output_shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """n float64 N(0, 1) targets shaped like one output."""
    return torch.randn(n, *output_shape, generator=generator, dtype=DTYPE)


def class_targets(n: int, output_shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """n class indices below the last output dimension, one per output position: (n,) or (n, seq)."""
    return torch.randint(0, output_shape[-1], (n, *output_shape[:-1]), generator=generator)


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error, written out (``F.mse_loss`` fails under forward-over-reverse in torch 2.13)."""
    return (output - target).square().mean()


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (batch, classes) logits, or of (batch, seq, vocab) logits over every position.

    The target ``-100`` is ignored (the mean runs over the other positions).
    """
    if output.dim() == 2:
        return F.cross_entropy(output, target)
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX)


def _check_cross_entropy(output_shape: tuple[int, ...]) -> None:
    if len(output_shape) not in (1, 2):
        raise ConslawError(f"cross_entropy needs outputs of shape (batch, classes) or (batch, seq, vocab), got "
                           f"(batch, {', '.join(map(str, output_shape))})",
                           "use --loss mse, or reshape the model's output")


@dataclass(frozen=True)
class Loss:
    """A training loss: ``fn(output, target)`` (a scalar), how its targets are drawn, and a check of the output.

    Args:
        name: the loss's name (in reports and JSON).
        fn: the loss of one batch, ``fn(output, target) -> scalar tensor``.
        targets: ``targets(n, output_shape, generator)``: n targets for outputs of ``output_shape``
            (one example's shape, without the batch dimension).
        check: raises a :class:`ConslawError` when the output shape does not fit the loss (None: any shape).
    """

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    targets: TargetSampler = gaussian_targets
    check: Callable[[tuple[int, ...]], None] | None = None


#: the built-in losses, by name
BUILTIN_LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", mse, gaussian_targets),
    "cross_entropy": Loss("cross_entropy", cross_entropy, class_targets, _check_cross_entropy),
}


def resolve_loss(loss: str | Loss | Callable) -> Loss:
    """The :class:`Loss` of a built-in name, a :class:`Loss`, or a callable ``loss(output, target)``."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        if loss not in BUILTIN_LOSSES:
            raise ConslawError(f"unknown loss {loss!r}", f"use one of {', '.join(BUILTIN_LOSSES)}, or pass a "
                               "callable loss(output, target)")
        return BUILTIN_LOSSES[loss]
    if callable(loss):
        return Loss(getattr(loss, "__name__", type(loss).__name__), loss)
    raise ConslawError(f"expected a loss name, a Loss or a callable, got {type(loss).__name__}",
                       f"use one of {', '.join(BUILTIN_LOSSES)} or a function loss(output, target)")

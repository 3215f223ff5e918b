"""The training losses of :class:`conslaw.fields.LossGradFields`: one table of built-ins, and user callables.

A :class:`Loss` is the loss function ``fn(output, target) -> scalar`` with the
way its random targets are drawn (the fields are gradients of the loss over
random batches Z = (inputs, targets), Sec 4.4). The built-ins (:data:`BUILTIN_LOSSES`):

- ``mse``: mean of (output - target)^2, Gaussian targets shaped like the output;
- ``cross_entropy``: outputs (batch, classes) with class targets (batch,), or
  (batch, seq, vocab) with token targets (batch, seq) at every position (a
  masked LM's, a seq2seq decoder's: the target -100 is ignored, as in
  ``F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), ignore_index=-100)``);
- ``next_token``: a causal language model's loss, the logits at position t
  scored against the token at t + 1,
  ``F.cross_entropy(logits[:, :-1].reshape(-1, V), y[:, 1:].reshape(-1), ignore_index=-100)``
  (what Hugging Face's ``*ForCausalLM`` return for ``labels=y``);
- ``model``: the loss the model returns itself (``out.loss`` of a Hugging Face
  model called with ``labels``; the labels are then drawn as part of the inputs).

For the token losses (``cross_entropy`` over sequences, ``next_token``) the
targets at the positions where the batch's ``attention_mask`` is 0 are -100
(ignored), as a padded batch is trained (:class:`conslaw.fields.LossGradFields`).

A user callable ``loss(output, target)`` gets Gaussian targets shaped like the
output; pass a :class:`Loss` to draw other targets (``class_targets``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

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


def next_token_cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Causal LM loss: logits (batch, seq, vocab) at t against the targets (batch, seq) at t + 1 (-100 ignored)."""
    logits = output[:, :-1]
    return F.cross_entropy(logits.reshape(-1, output.shape[-1]), target[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX)


def model_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The model's own loss: ``output`` is the scalar the model returned (``target`` is not read)."""
    return output


def no_targets(n: int, output_shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """n placeholders (the ``model`` loss reads its labels from the inputs)."""
    return torch.zeros(n, dtype=DTYPE)


def _shape(output_shape: tuple[int, ...]) -> str:
    return f"(batch{''.join(f', {s}' for s in output_shape)})"


def _check_cross_entropy(output_shape: tuple[int, ...]) -> None:
    if len(output_shape) not in (1, 2):
        raise ConslawError(f"cross_entropy needs outputs of shape (batch, classes) or (batch, seq, vocab), got "
                           f"{_shape(output_shape)}", "use --loss mse, or reshape the model's output")


def _check_next_token(output_shape: tuple[int, ...]) -> None:
    if len(output_shape) != 2 or output_shape[0] < 2:
        raise ConslawError(f"next_token needs a language model's logits of shape (batch, seq, vocab) with seq >= 2, "
                           f"got {_shape(output_shape)}",
                           "use --loss cross_entropy for a classifier (batch, classes), or a longer --seq-len")


def _check_model(output_shape: tuple[int, ...]) -> None:
    if output_shape:
        raise ConslawError(f"the loss the model returned is not a scalar: shape {tuple(output_shape)} per example",
                           "return a scalar loss, or use --loss cross_entropy / next_token")


@dataclass(frozen=True)
class Loss:
    """A training loss: ``fn(output, target)`` (a scalar), how its targets are drawn, and a check of the output.

    Args:
        name: the loss's name (in reports and JSON).
        fn: the loss of one batch, ``fn(output, target) -> scalar tensor``.
        targets: ``targets(n, output_shape, generator)``: n targets for outputs of ``output_shape``
            (one example's shape, without the batch dimension).
        check: raises a :class:`ConslawError` when the output shape does not fit the loss (None: any shape).
        softmax: the loss reads the output through softmax + cross-entropy (the last layer's translation laws,
            Prop 3.11, are candidates).
        masked: token targets at the positions where the batch's ``attention_mask`` is 0 are -100 (ignored).
        from_model: the loss is the one the model returns (``out.loss``; the batch carries ``labels``).
    """

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    targets: TargetSampler = gaussian_targets
    check: Callable[[tuple[int, ...]], None] | None = None
    softmax: bool = False
    masked: bool = False
    from_model: bool = False


#: the built-in losses, by name
BUILTIN_LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", mse, gaussian_targets),
    "cross_entropy": Loss("cross_entropy", cross_entropy, class_targets, _check_cross_entropy, softmax=True,
                          masked=True),
    "next_token": Loss("next_token", next_token_cross_entropy, class_targets, _check_next_token, softmax=True,
                       masked=True),
    "model": Loss("model", model_loss, no_targets, _check_model, softmax=True, from_model=True),
}


#: Hugging Face heads whose returned loss follows the problem_type rule (regression / single / multi-label)
CLASSIFICATION_HEADS = ("ForSequenceClassification", "ForImageClassification", "ForAudioClassification")


def model_loss_is_softmax(model: torch.nn.Module, example: Any) -> bool:
    """Whether the loss a model returns is a softmax cross-entropy over its output (``softmax`` of the
    ``model`` loss), by the rule of Hugging Face's ``*ForSequenceClassification.forward`` (image and audio
    classification heads alike): ``config.problem_type`` ``regression`` (MSE) and
    ``multi_label_classification`` (BCE with logits) are not; unset, one label (``num_labels == 1``) is a
    regression and float labels are multi-label. Language-model and other heads are a cross-entropy (True),
    as are models without a config.

    Args:
        model: the model.
        example: its example batch (a dict carrying ``labels``).
    """
    config = getattr(model, "config", None)
    problem = getattr(config, "problem_type", None)
    if problem in ("regression", "multi_label_classification"):
        return False
    if problem is None and type(model).__name__.endswith(CLASSIFICATION_HEADS):
        labels = example.get("labels") if isinstance(example, Mapping) else None
        if getattr(config, "num_labels", None) == 1 or (labels is not None and torch.is_floating_point(labels)):
            return False
    return True


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

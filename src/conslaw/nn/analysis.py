"""One analysis of a model, shared by find_laws, discover and rebalance.

:func:`analyse` checks the model and its example input, makes a float64
analysis copy (the user's model is never touched), builds the loss-gradient
fields and traces the data flow. Dropout is switched off in the copy (a random
mask makes the fields random); BatchNorm in training mode is patched with
``torch.func.replace_all_batch_norm_modules_`` so that the functional
transforms do not update running statistics (eval-mode BatchNorm keeps its
running statistics, which it only reads).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import replace_all_batch_norm_modules_

from ..errors import ConslawError
from ..fields import LossGradFields
from ..params import DTYPE, ParamSpace
from .ops import DROPOUT
from .registry import HandlerRegistry
from .trace import Graph, trace

#: above this many parameters, verify with 4 batches of 4 inputs (each is a float64 backward pass)
LARGE_D = 1_000_000


def analysis_copy(model: nn.Module) -> nn.Module:
    """A float64 copy with dropout off and BatchNorm safe for torch.func; the original is untouched."""
    clone = copy.deepcopy(model).to(DTYPE)
    for m in clone.modules():
        if isinstance(m, DROPOUT):
            m.p = 0.0
        if isinstance(m, nn.MultiheadAttention):
            m.dropout = 0.0
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            replace_all_batch_norm_modules_(m)  # batch statistics, no running-stat updates
    return clone


def check_model(model: nn.Module, example_input) -> None:
    """A clear error unless ``model`` is a module with float parameters and ``example_input`` a batch of >= 2."""
    if not isinstance(model, nn.Module):
        raise ConslawError(f"expected an nn.Module, got {type(model).__name__}", "pass the model object")
    params = list(model.named_parameters())
    if not params:
        raise ConslawError(f"{type(model).__name__} has no parameters: there is nothing to conserve",
                           "pass a model with trainable parameters")
    bad = [n for n, p in params if not torch.is_floating_point(p)]
    if bad:
        raise ConslawError(f"parameters {bad} are not floating point", "gradient flow needs float parameters")
    if not isinstance(example_input, torch.Tensor):
        raise ConslawError(f"expected an example input tensor, got {type(example_input).__name__}",
                           "pass a batch of inputs, e.g. torch.randn(2, 3, 32, 32)")
    if example_input.dim() < 2 or example_input.shape[0] < 2:
        raise ConslawError(f"the example input needs a batch dimension of size >= 2, got shape "
                           f"{tuple(example_input.shape)}", "pass a batch of at least 2 inputs")


@dataclass
class ModelAnalysis:
    """The float64 copy of a model, its loss-gradient fields, theta, and (when traced) its graph."""

    model: nn.Module
    example: torch.Tensor
    fields: LossGradFields
    theta: torch.Tensor
    large: bool
    graph: Graph | None = None

    @property
    def space(self) -> ParamSpace:
        """The parameter space (trainable parameters of the model)."""
        return self.fields.space


def analyse(model: nn.Module, example_input: torch.Tensor, loss: str = "mse",
            registry: HandlerRegistry | None = None, traced: bool = True) -> ModelAnalysis:
    """Check, copy, build the fields of, and (``traced``) trace ``model`` (see the module docstring).

    Args:
        model: the user's model (left untouched).
        example_input: a batch of inputs, batch first.
        loss: ``mse`` or ``cross_entropy``.
        registry: the module handlers (their types are leaves of the trace).
        traced: also trace the data flow (needed to find laws, not to discover them).
    """
    check_model(model, example_input)
    work = analysis_copy(model)
    example = example_input.to(DTYPE) if torch.is_floating_point(example_input) else example_input
    try:
        with torch.no_grad():
            work(example)
    except Exception as exc:
        raise ConslawError(f"the example input of shape {tuple(example_input.shape)} does not run through "
                           f"{type(model).__name__}: {type(exc).__name__}: {exc}".replace("\n", " "),
                           "pass an input of the shape the model expects, batch first") from exc
    large = sum(p.numel() for p in work.parameters()) > LARGE_D
    fields = LossGradFields(work, example, loss, batch=4 if large else 8)
    graph = trace(work, example, (registry or HandlerRegistry.default()).leaf_types()) if traced else None
    return ModelAnalysis(work, example, fields, fields.theta(), large, graph)

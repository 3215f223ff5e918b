"""Loss-gradient fields of a real model: chi_Z(theta) = grad L_Z(theta) (Prop 2.3, Sec 4.4).

W_theta is the span of the gradients of the model's own loss over random
batches Z = (inputs, targets). Evaluated on the model given (usually a float64
analysis copy, see :func:`conslaw.nn.analysis.analysis_copy`) through
``torch.func.functional_call`` with its buffers passed explicitly.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..composite import composite_ops
from ..errors import ConslawError
from ..params import DTYPE, ParamSpace
from .base import FieldSource
from .inputs import gaussian_inputs

LOSSES = ("mse", "cross_entropy")
#: above this D, fields are evaluated one by one with plain autograd instead of vmap
VMAP_MAX_D = 200_000


class LossGradFields(FieldSource):
    """chi_Z(theta) = grad L_Z(theta) for random batches Z = (inputs, targets) of the model's loss.

    The model runs inside :func:`conslaw.composite.composite_ops`, so that
brackets through LayerNorm, BatchNorm and instance norm are right.
Floating inputs are drawn from a Gaussian scale mixture (:mod:`conslaw.fields.inputs`),
    integer inputs (token ids) uniformly below the smallest embedding size.

    Args:
        model: the module (its parameters that require gradients are theta).
        example_input: one batch of inputs (batch first), for the input shape and dtype.
        loss: ``mse`` or ``cross_entropy``.
        batch: inputs per sampled field.
    """

    label = "loss-gradient"
    oversample = 3.0

    def __init__(self, model: nn.Module, example_input: torch.Tensor, loss: str = "mse", batch: int = 8) -> None:
        if loss not in LOSSES:
            raise ConslawError(f"unknown loss {loss!r}", f"use one of {', '.join(LOSSES)}")
        self.model = model
        self.space = ParamSpace.from_module(model)
        self.names = self.space.names
        self.buffers = dict(model.named_buffers())
        self.loss = loss
        self.batch = batch
        self.example = example_input
        self.integer_input = not torch.is_floating_point(example_input)
        if self.integer_input:
            embeddings = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
            self.high = min(embeddings) if embeddings else int(example_input.max()) + 1
        with torch.no_grad():
            out = self._forward(self.space.unflatten(self.space.flatten(dict(model.named_parameters()))),
                                self.sample_inputs(2, torch.Generator().manual_seed(0)))
        self.output_shape = tuple(out.shape[1:])
        if loss == "cross_entropy" and len(self.output_shape) != 1:
            raise ConslawError(f"cross_entropy needs outputs of shape (batch, classes), got (batch, "
                               f"{', '.join(map(str, self.output_shape))})", "use --loss mse")

    def theta(self) -> torch.Tensor:
        """The model's current parameters as a flat float64 vector."""
        return self.space.flatten(dict(self.model.named_parameters())).detach()

    def sample_inputs(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Draw n inputs shaped like one example (token ids or a Gaussian scale mixture)."""
        shape = tuple(self.example.shape[1:])
        if self.integer_input:
            return torch.randint(0, self.high, (n, *shape), generator=generator, dtype=self.example.dtype)
        return gaussian_inputs(n, shape, generator)

    def sample(self, n: int, generator: torch.Generator) -> Any:
        """Draw n batches (inputs, targets) of ``batch`` examples each."""
        x = self.sample_inputs(n * self.batch, generator)
        if self.loss == "cross_entropy":
            y = torch.randint(0, self.output_shape[0], (n * self.batch,), generator=generator)
        else:
            y = torch.randn(n * self.batch, *self.output_shape, generator=generator, dtype=DTYPE)
        return x.reshape(n, self.batch, *x.shape[1:]), y.reshape(n, self.batch, *y.shape[1:])

    def _forward(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        # composite normalizations: the native ones have wrong nested forward derivatives (conslaw.composite);
        # the math kernel of attention: the fused CPU kernels have no forward-mode derivative
        with composite_ops(), sdpa_kernel(SDPBackend.MATH):
            return functional_call(self.model, {**params, **self.buffers}, (x,))

    def loss_value(self, theta: torch.Tensor, p: Any) -> torch.Tensor:
        """L_Z(theta) for one batch Z = p = (inputs, targets)."""
        x, y = p
        out = self._forward(self.space.unflatten(theta), x)
        if self.loss == "cross_entropy":
            return F.cross_entropy(out, y)
        return (out - y).square().mean()  # F.mse_loss fails under forward-over-reverse (torch 2.13)

    def field(self, theta: torch.Tensor, p: Any) -> torch.Tensor:
        """grad L_Z(theta)."""
        return grad(self.loss_value)(theta, p)

    def evaluate(self, theta: torch.Tensor, ps: Any) -> torch.Tensor:
        """Batched with vmap for small models, one by one (plain autograd) for large ones."""
        if self.space.D <= VMAP_MAX_D:
            return vmap(self.field, in_dims=(None, 0))(theta, ps)
        rows = []
        for k in range(ps[0].shape[0]):
            t = theta.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(self.loss_value(t, (ps[0][k], ps[1][k])), t)
            rows.append(g)
        return torch.stack(rows)

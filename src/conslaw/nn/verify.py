"""Verification of laws on the model itself: loss-gradient fields (Sec 4.4) in float64.

``LossGradFields`` are the fields grad L_Z(theta) of the model's own loss over
random batches Z (Prop 2.3: W_theta is their span). A law h is exact when
max_Z |<grad h, grad L_Z>| / (|grad h| |grad L_Z|) is at round-off.

The model is analysed on a float64 copy; the user's model (parameters,
buffers, running statistics) is never touched. Dropout is switched off in the
copy (a random mask makes the fields random); BatchNorm in training mode is
patched with ``torch.func.replace_all_batch_norm_modules_`` so that the
functional transforms do not update running statistics (eval-mode BatchNorm
keeps its running statistics, which it only reads).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, replace_all_batch_norm_modules_, vmap

from ..errors import ConslawError
from ..fields import FieldSource
from ..params import DTYPE, ParamSpace

LOSSES = ("mse", "cross_entropy")


def analysis_copy(model: nn.Module) -> nn.Module:
    """A float64 copy with dropout off and BatchNorm safe for torch.func; the original is untouched."""
    clone = copy.deepcopy(model).to(DTYPE)
    for m in clone.modules():
        if isinstance(m, nn.Dropout | nn.Dropout1d | nn.Dropout2d | nn.Dropout3d):
            m.p = 0.0
        if isinstance(m, nn.MultiheadAttention):
            m.dropout = 0.0
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            replace_all_batch_norm_modules_(m)  # batch statistics, no running-stat updates
    return clone


class LossGradFields(FieldSource):
    """chi_Z(theta) = grad L_Z(theta) for random batches Z = (inputs, targets) of the model's loss."""

    kind = "loss-gradient"
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

    def sample_inputs(self, n: int, generator: torch.Generator) -> torch.Tensor:
        shape = (n, *self.example.shape[1:])
        if self.integer_input:
            return torch.randint(0, self.high, shape, generator=generator, dtype=self.example.dtype)
        # a Gaussian scale mixture (scales e^u, u ~ U(-3, 3)): inputs reach every linear region of a
        # piecewise-linear model, also those that biases put away from the origin
        scale = torch.exp(torch.rand(n, generator=generator, dtype=DTYPE) * 6.0 - 3.0)
        return torch.randn(shape, generator=generator, dtype=DTYPE) * scale.reshape(-1, *([1] * (len(shape) - 1)))

    def sample(self, n: int, generator: torch.Generator) -> Any:
        x = self.sample_inputs(n * self.batch, generator)
        if self.loss == "cross_entropy":
            y = torch.randint(0, self.output_shape[0], (n * self.batch,), generator=generator)
        else:
            y = torch.randn(n * self.batch, *self.output_shape, generator=generator, dtype=DTYPE)
        return x.reshape(n, self.batch, *x.shape[1:]), y.reshape(n, self.batch, *y.shape[1:])

    def _forward(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, {**params, **self.buffers}, (x,))

    def loss_value(self, theta: torch.Tensor, p: Any) -> torch.Tensor:
        x, y = p
        out = self._forward(self.space.unflatten(theta), x)
        if self.loss == "cross_entropy":
            return F.cross_entropy(out, y)
        return (out - y).square().mean()  # F.mse_loss fails under forward-over-reverse (torch 2.13)

    def field(self, theta: torch.Tensor, p: Any) -> torch.Tensor:
        return grad(self.loss_value)(theta, p)

    def evaluate(self, theta: torch.Tensor, ps: Any) -> torch.Tensor:
        """Batched with vmap for small models, one by one (plain autograd) for large ones."""
        if self.space.D <= 200_000:
            return vmap(self.field, in_dims=(None, 0))(theta, ps)
        rows = []
        for k in range(ps[0].shape[0]):
            t = theta.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(self.loss_value(t, (ps[0][k], ps[1][k])), t)
            rows.append(g)
        return torch.stack(rows)

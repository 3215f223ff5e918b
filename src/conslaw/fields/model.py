"""Fields of a model: chi_{x,w}(theta) = d_theta g(theta, x)^T w (Cor 2.5)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad, vmap

from ..params import DTYPE, ParamSpace
from .base import FieldSource, Params
from .custom_functions import custom_function_nodes


class ModelFields(FieldSource):
    """chi_{x,w}(theta) = d_theta g(theta, x)^T w (Cor 2.5), V_ell = R^n.

    Each sampled field uses ``inputs_per_sample`` inputs,
    chi = sum_b d_theta g(theta, x_b)^T w_b (a mini-batch loss gradient).

    Args:
        space: the parameter space.
        model: ``model(params, x)`` evaluates g on one input.
        sample_input: ``sample_input(n, generator)`` draws n inputs.
        inputs_per_sample: inputs summed in one field.
    """

    label = "model"
    oversample = 0.25
    gradient = True  # chi_{x,w} = grad_theta <g(theta, x), w> (False with a custom autograd.Function: __init__)

    def __init__(self, space: ParamSpace, model: Callable[[Params, torch.Tensor], torch.Tensor],
                 sample_input: Callable[[int, torch.Generator], torch.Tensor],
                 inputs_per_sample: int = 1) -> None:
        self.space = space
        self.model = model
        self.sample_input = sample_input
        self.inputs_per_sample = inputs_per_sample
        x0 = sample_input(1, torch.Generator().manual_seed(0))[0]
        # one probe forward with gradients: the output shape, and a custom autograd.Function in the model, whose
        # backward need not be the transpose of its forward derivative (the fields are then not taken as gradients:
        # forward-mode brackets only)
        with torch.enable_grad():
            probe = space.sample("gaussian", torch.Generator().manual_seed(0)).requires_grad_(True)
            out = model(space.unflatten(probe), x0)
        self.output_shape = tuple(out.shape)
        self.custom_functions = custom_function_nodes(out)
        self.gradient = not self.custom_functions

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n (inputs, output weights) pairs, each with ``inputs_per_sample`` inputs."""
        b = self.inputs_per_sample
        x = self.sample_input(n * b, generator)
        w = torch.randn(n * b, *self.output_shape, generator=generator, dtype=DTYPE)
        return x.reshape(n, b, *x.shape[1:]), w.reshape(n, b, *self.output_shape)

    def field(self, theta: torch.Tensor, p: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """sum_b d_theta g(theta, x_b)^T w_b."""
        xs, ws = p

        def pairing(t: torch.Tensor) -> torch.Tensor:
            params = self.space.unflatten(t)
            out = vmap(self.model, in_dims=(None, 0))(params, xs)
            return (out * ws).sum()

        return grad(pairing)(theta)

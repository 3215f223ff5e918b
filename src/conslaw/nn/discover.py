"""Polynomial laws of a real model: :func:`conslaw.discover.discover` on its loss-gradient fields."""

from __future__ import annotations

import torch
from torch import nn

from ..discover import Discovery, discover
from .analysis import analyse


def discover_model(model: nn.Module, example_input: torch.Tensor, loss: str = "mse", degree: int = 2, *,
                   homogeneous: bool = False, seed: int = 0, block: list[str] | None = None) -> Discovery:
    """All polynomial laws of degree <= ``degree`` of ``model``'s loss-gradient fields, with a certificate.

    The certificate's Lie count is taken at the model's own parameters (at random
    points with ``block``, whose other parameters are resampled). The model is untouched.

    Args:
        model: the model.
        example_input: a batch of inputs, batch first.
        loss: ``mse`` or ``cross_entropy``.
        degree: maximal degree.
        homogeneous: only homogeneous polynomials of degree ``degree``.
        seed: seed of every random draw.
        block: parameter names: the laws depending on these only (Prop 4.3).
    """
    analysis = analyse(model, example_input, loss, traced=False)
    return discover(analysis.fields, degree, homogeneous=homogeneous, seed=seed, block=block,
                    certify_at=None if block else analysis.theta)

"""The one input sampler of the engine: Gaussian, or a Gaussian scale mixture.

Model and loss-gradient fields need inputs that reach every linear region of a
piecewise-linear model, also those that biases put away from the origin. A
Gaussian scale mixture x = e^u z, u ~ U(-3, 3), z ~ N(0, I) does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..params import DTYPE

#: log-scale range of the mixture: scales e^u with u ~ U(-SPREAD, SPREAD)
SPREAD = 3.0


def gaussian_inputs(n: int, shape: Sequence[int], generator: torch.Generator, multiscale: bool = True) -> torch.Tensor:
    """Draw n float64 inputs of ``shape``: N(0, I), times e^u per input when ``multiscale``.

    Args:
        n: number of inputs (the leading dimension of the result).
        shape: shape of one input.
        generator: the source of randomness.
        multiscale: scale each input by e^u, u ~ U(-3, 3) (a Gaussian scale mixture).
    """
    x = torch.randn(n, *shape, generator=generator, dtype=DTYPE)
    if multiscale:
        u = torch.rand(n, generator=generator, dtype=DTYPE) * (2 * SPREAD) - SPREAD
        x = x * torch.exp(u).reshape(-1, *([1] * len(shape)))
    return x

"""Named vs numeric on a block of parameters, for models too large for the whole-model Lie count.

By Prop 4.3 (eq. 25), the fields of a model restricted to a block theta_T, the other
parameters eta resampled for every field, have as laws exactly the laws of the whole model
that depend on theta_T only. So for a block T:

    numeric_T = |T| - dim Lie(R_T(W))(theta_T)      (the engine on the restricted fields)
    named_T   = rank of the gradients of the named laws whose parameters all lie in T

and named_T == numeric_T certifies that every law living on T is named. The point is the
generic point near theta that :func:`conslaw.find_laws` counts at.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import ConslawError
from ..fields import restrict
from ..lie import lie_trace_dimension
from ..rank import sparse_rank
from .analysis import analyse
from .find import ModelLaws
from .status import COUNT_PERTURBATION, perturbed


@dataclass
class BlockCount:
    """Named laws living on a block against the engine's count on the restricted fields."""

    block: list[str]
    size: int
    named_exact: int
    named_approximate: int
    numeric: int
    gap: float | None
    seconds: float

    @property
    def unnamed(self) -> int:
        """Laws the engine counts on the block beyond the named exact ones."""
        return self.numeric - self.named_exact


def block_count(model: nn.Module, example_input, loss: str, laws: ModelLaws, block: Sequence[str],
                seed: int = 0) -> BlockCount:
    """named vs numeric on ``block`` (see the module docstring).

    Args:
        model: the model ``laws`` were found on.
        example_input: its example input.
        loss: its loss.
        laws: the result of ``find_laws(model, example_input, loss, seed=seed)`` (numeric=False is enough).
        block: parameter names (as in ``model.named_parameters()``).
        seed: the seed of ``find_laws`` (the same generic point).
    """
    start = time.perf_counter()
    with sdpa_kernel(SDPBackend.MATH):
        analysis = analyse(model, example_input, loss)
        space = analysis.space
        missing = [b for b in block if b not in space.shapes]
        if missing:
            raise ConslawError(f"block names {missing}, which are not parameters of {type(model).__name__}",
                               f"choose among {space.names}")
        fields = restrict(analysis.fields, list(block))
        generic = perturbed(space, analysis.theta, torch.Generator().manual_seed(seed + 1), COUNT_PERTURBATION)
        lie = lie_trace_dimension(fields, generic[fields.block_index], seed=seed)
    inside = set(block)
    exact = [c.law.sparse_grad(generic) for c in laws.laws if c.status == "exact" and set(c.law.params) <= inside]
    both = exact + [c.law.sparse_grad(generic) for c in laws.laws
                    if c.status == "approximate" and set(c.law.params) <= inside]
    named = sparse_rank(exact, space.D)
    return BlockCount(block=list(block), size=fields.space.D, named_exact=named,
                      named_approximate=sparse_rank(both, space.D) - named, numeric=lie.lie_laws,
                      gap=lie.spectral_gap, seconds=time.perf_counter() - start)

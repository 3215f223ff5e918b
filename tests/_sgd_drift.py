"""Plain float64 SGD at lr and 2 lr: the outside check that a law is conserved (Prop 5.1), shared by the tests.

Gradient flow keeps an exact law h constant; K steps of SGD of size lr move it by O(K lr^2)
(Prop 5.1: E|h(theta_K) - h(theta_0)| <= C_h C_L / 2 sum_k tau_k^2), so from one start and on the
same batches, 2 lr moves a quadratic law ~4x as far as lr, while a quantity that is not conserved,
such as |W|^2 of a layer, moves at O(lr): ~2x. A linear law is kept exactly by every step (its
gradient is constant and orthogonal to every loss gradient): its drift stays at round-off.

The SGD loop is written here by hand (theta <- theta - lr grad L, float64), never through conslaw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn


def flat_params(model: nn.Module) -> torch.Tensor:
    """The parameters of ``model`` as one flat vector, in ``parameters()`` order (conslaw's ParamSpace order)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def law_values(laws: Sequence) -> Callable[[nn.Module], torch.Tensor]:
    """observe(model) = the values of conslaw ``Law`` objects at the model's flat parameters."""
    def observe(model: nn.Module) -> torch.Tensor:
        theta = flat_params(model)
        return torch.stack([torch.as_tensor(law.value(theta), dtype=torch.float64) for law in laws])
    return observe


def sgd_drift(build: Callable[[], nn.Module], loss_fn: Callable[[nn.Module, object], torch.Tensor],
              batches: Iterable, observe: Callable[[nn.Module], torch.Tensor], lr: float) -> torch.Tensor:
    """observe(after) - observe(before) for plain float64 SGD at ``lr``, one step per batch.

    Args:
        build: a fresh model (the same one at every call: seed it).
        loss_fn: loss_fn(model, batch) -> scalar loss.
        batches: the batches, one SGD step each.
        observe: model -> 1-d tensor of the watched quantities.
        lr: the learning rate.
    """
    model = build().double()
    with torch.no_grad():
        start = observe(model).detach().clone()
    params = [p for p in model.parameters() if p.requires_grad]
    for batch in batches:
        grads = torch.autograd.grad(loss_fn(model, batch), params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                if g is not None:
                    p.sub_(lr * g)
    with torch.no_grad():
        return observe(model).detach() - start


def drift_at_lr_and_2lr(build, loss_fn, batches, observe, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(drift at lr, drift at 2 lr) of every watched quantity, from the same start on the same batches."""
    batches = list(batches)
    return (sgd_drift(build, loss_fn, batches, observe, lr), sgd_drift(build, loss_fn, batches, observe, 2 * lr))


def drift_ratios(build, loss_fn, batches, observe, lr: float) -> torch.Tensor:
    """|drift at 2 lr| / |drift at lr| of every watched quantity: ~4 for a conserved law, ~2 for |W|^2."""
    small, large = drift_at_lr_and_2lr(build, loss_fn, batches, observe, lr)
    return (large / small).abs()

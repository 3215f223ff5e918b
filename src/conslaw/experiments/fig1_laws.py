"""The functions Figure 1 tracks on the first residual block of a CIFAR ResNet-18, and their check at theta_0.

The block is conv1 (c_0 -> c_1 channels) -> [bn1] -> ReLU -> conv2 (c_1 -> c_2) -> [bn2]. With
v_j = conv1.weight[j] (the filters into hidden channel j) and u_{:,j} = conv2.weight[:, j] (the
filters out of it), eq. (17) is h_j = sum_k |u_{k,j}|^2 - sum_i |v_{j,i}|^2, and the paper tracks

    h = sum_j h_j = |conv2.weight|_F^2 - |conv1.weight|_F^2          (``law="eq17"``).

- ``norm="bn"`` (the standard CIFAR ResNet-18, the paper's model): a BatchNorm follows each
  convolution, so the loss is invariant under conv1.weight[j] -> s conv1.weight[j] (bn1 normalizes
  channel j) and under conv2.weight[k] -> s conv2.weight[k] (bn2): each |conv1.weight[j]|^2 and each
  |conv2.weight[k]|^2 is conserved by gradient flow, and h is a sum of these scale invariances. It
  is conserved up to BatchNorm's eps (the invariance holds exactly only for eps = 0).
- ``norm="none"`` (no normalization; convolutions with biases): h_j is the rescaling law of hidden
  channel j of the ReLU (eq. 17 with the bias appended to v_j as the weight of a constant input), so
  h = |conv2.weight|^2 - |conv1.weight|^2 - |conv1.bias|^2 is conserved exactly.
- ``law="bn-exact"`` (BatchNorm model only): the rescaling law of the hidden channels through bn1's
  affine map, sum_j |conv2.weight[:, j]|^2 - gamma_j^2 - beta_j^2, conserved exactly (no eps).

The control is a function SGD moves at first order (error ~ lr): |fc.bias|^2 on the BatchNorm model,
|fc.weight|^2 without normalization (see :func:`control_law`). (Sums of norms inside the block are no
control with BatchNorm: each norm is conserved to first order.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConslawError
from ..laws import QuadraticLaw, balance_law, unit_slot
from ..params import DTYPE, ParamSpace

LAWS = ("eq17", "bn-exact")
NORMS = ("bn", "none")
BLOCK = "layers.0.0"


def check_options(law: str, norm: str) -> None:
    """Refuse unknown or impossible (law, norm) pairs."""
    if law not in LAWS or norm not in NORMS:
        raise ConslawError(f"Figure 1 options law={law!r}, norm={norm!r}",
                           f"use --law {'|'.join(LAWS)} and --norm {'|'.join(NORMS)}")
    if law == "bn-exact" and norm == "none":
        raise ConslawError("--law bn-exact needs the BatchNorm model (--norm bn): without normalization there is no "
                           "BatchNorm affine map to rescale", "use --law eq17 --norm none (eq. 17 is exact there)")


def block_law(model, law: str = "eq17", norm: str = "bn") -> QuadraticLaw:
    """h = sum_j h_j of the first residual block (see the module docstring for the three variants)."""
    check_options(law, norm)
    space = ParamSpace.from_module(model)
    block = model.layers[0][0]
    c1 = block.conv1.out_channels
    hidden = slice(0, c1)
    plus = [unit_slot(space, f"{BLOCK}.conv2.weight", 1, hidden)]
    if law == "bn-exact":
        minus = [unit_slot(space, f"{BLOCK}.bn1.weight", 0, hidden), unit_slot(space, f"{BLOCK}.bn1.bias", 0, hidden)]
    else:
        minus = [unit_slot(space, f"{BLOCK}.conv1.weight", 0, hidden)]
        if norm == "none":
            minus.append(unit_slot(space, f"{BLOCK}.conv1.bias", 0, hidden))
    name = {"eq17": "h = sum_j h_j, eq. (17), first residual block",
            "bn-exact": "sum_j |conv2[:,j]|^2 - gamma_j^2 - beta_j^2 (bn1), first residual block"}[law]
    return balance_law(name, plus, minus, family="rescaling", module=BLOCK, origin="closed-form")


def control_law(model, norm: str = "bn") -> QuadraticLaw:
    """The control, a function SGD moves at first order: |fc.bias|^2 (BatchNorm model), |fc.weight|^2 (none).

    Measured on the BatchNorm model (exponent of the final error in lr, 1e-3 .. 5e-3): |fc.weight|^2
    drifts mostly at second order there (0.78 at widths 8 and 16, 0.30 at width 64 over 5 steps),
    |fc.bias|^2 at first order (0.95 at widths 8 and 16, 0.69 at width 64 over 5 steps, one seed).
    Without normalization |fc.weight|^2 is first order (1.0).
    """
    space = ParamSpace.from_module(model)
    name = "fc.bias" if norm == "bn" else "fc.weight"
    slot = unit_slot(space, name, 0, slice(0, model.fc.out_features))
    return QuadraticLaw.inner_difference(f"control: |{name}|^2", f"|{name}|^2", (name,),
                                         plus=[(slot.index, slot.index)], minus=[], origin="control")


def why_conserved(law: str, norm: str) -> str:
    """One sentence: why the tracked function is conserved on this model."""
    if law == "bn-exact":
        return ("the rescaling law of the hidden channels through bn1's affine map (gamma_j, beta_j): an exact "
                "law of gradient flow")
    if norm == "none":
        return "without normalization eq. (17) is the exact rescaling law of each hidden ReLU channel (bias included)"
    return ("a BatchNorm follows each convolution, so every |conv1.weight[j]|^2 and |conv2.weight[k]|^2 is a scale "
            "invariance conserved by gradient flow and h = sum_j h_j is a sum of them; exact only for BatchNorm "
            "eps = 0, conserved up to the eps effect")


def gradient_residual(model, law: QuadraticLaw, inputs, labels, batch: int, batches: int = 2,
                      seed: int = 0) -> float:
    """max over ``batches`` mini-batches of |<grad h, grad L_Z>| / (|grad h| |grad L_Z|) on supp h, at theta.

    The cheap check that ``law`` is a law of this model at its theta_0 (Prop 5.1's first-order term
    vanishes): round-off level for an exact law, about BatchNorm's eps effect for eq. (17) with BatchNorm,
    order 1 for a function that is not conserved. The model's parameters and buffers are left as they were.
    """
    space = ParamSpace.from_module(model)
    params = dict(model.named_parameters())
    theta = torch.cat([params[n].detach().to(DTYPE).reshape(-1) for n in space.names]).cpu()
    support, g_h = law.sparse_grad(theta)
    buffers = {k: v.clone() for k, v in model.state_dict().items() if k not in params}
    order = torch.Generator().manual_seed(2000 + seed)
    worst = 0.0
    device = next(model.parameters()).device
    try:
        for _ in range(batches):
            idx = torch.randint(0, len(inputs), (batch,), generator=order)
            model.zero_grad()
            F.cross_entropy(model(inputs[idx].to(device)), labels[idx].to(device)).backward()
            grads = torch.cat([(params[n].grad if params[n].grad is not None else torch.zeros_like(params[n]))
                               .detach().to(DTYPE).reshape(-1) for n in space.names]).cpu()
            g_l = grads[support]
            cos = abs(float(g_h @ g_l)) / max(float(g_h.norm() * g_l.norm()), 1e-300)
            worst = max(worst, cos)
    finally:
        model.zero_grad(set_to_none=True)
        model.load_state_dict(buffers, strict=False)
    return worst

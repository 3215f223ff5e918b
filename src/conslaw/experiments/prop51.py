"""Prop 5.1, checked as the bound's assumption requires: E|h(theta_k) - h(theta_0)| <= C_h C_L / 2 sum_{i<k} tau_i^2.

Eq. (26) asks for a C_L that bounds E_{Z_k, theta_k} |grad L_{Z_k}(theta_k)|^2 at *every* step k of
the trajectory. Here the expectation is estimated over ``seeds`` SGD runs (independent mini-batch
orders from one theta_0), and

    C_L = max_k  mean_seeds |grad L_{Z_k}(theta_k)|^2          (a sup along the trajectory, eq. 26)

is the smallest constant that satisfies (26) on these runs; C_h = 2 is the norm of the Hessian of
h = |u|^2 - |v|^2 - b^2 (diag(+-2)). The left side of (27) is mean_seeds |h(theta_k) - h(theta_0)|.

Two checks, over constant step sizes tau spanning a factor 8 (tau^2 a factor 64):

1. the bound holds: error_k <= bound_k at every step k and every tau;
2. the bound has the error's order in tau: the ratio error_K / bound_K at the last step varies by
   less than :data:`ORDER_SPREAD` across the step sizes. A bound of the error's order gives a spread
   near 1, a bound without the tau^2 factor (C_h C_L / 2 k, which check 1 alone would pass) about
   tau^2's range, 64; the threshold is their geometric middle, 8. (Measured: 2.3 over 100 steps,
   3.3 over 500: the ratio falls slowly with tau, as a larger step travels further along the
   trajectory in k steps, where the gradients are smaller than their sup C_L.)

And with decaying steps tau_k = tau_0 / (k + 1) the error stays bounded (no growth from k/2 to k).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .. import catalog
from ..flows import sgd
from .fidelity import protocol_record
from .protocol import claim

#: check 2 passes when max / min of error_K / bound_K over the step sizes is below this
ORDER_SPREAD = 8.0
#: C_h of a difference of squared norms: its Hessian is diag(+-2)
C_H = 2.0


def sup_constant(grad_sq: np.ndarray) -> float:
    """C_L of eq. (26): max over steps k of the mean over seeds of |grad L_{Z_k}(theta_k)|^2.

    Args:
        grad_sq: (seeds, steps) squared norms of the mini-batch gradients.
    """
    return float(np.max(np.mean(grad_sq, axis=0)))


def bound(c_l: float, lrs: np.ndarray, c_h: float = C_H) -> np.ndarray:
    """Eq. (27): C_h C_L / 2 sum_{i<k} tau_i^2 for k = 0 .. steps."""
    return np.r_[0.0, c_h * c_l / 2 * np.cumsum(np.square(np.asarray(lrs, dtype=float)))]


def check(errors: dict[float, np.ndarray], grad_sq: dict[float, np.ndarray], lrs: dict[float, np.ndarray],
          bound_fn: Callable[[float, np.ndarray], np.ndarray] = bound) -> dict:
    """Checks 1 and 2 of the module docstring, per constant step size tau (the keys).

    Args:
        errors: tau -> (steps + 1,) mean over seeds of |h(theta_k) - h(theta_0)|.
        grad_sq: tau -> (seeds, steps) squared gradient norms.
        lrs: tau -> (steps,) step sizes.
        bound_fn: (C_L, step sizes) -> the bound at k = 0 .. steps (eq. 27 by default; a test passes others).
    """
    ratios, worst = {}, 0.0
    for tau in errors:
        b = bound_fn(sup_constant(grad_sq[tau]), lrs[tau])
        worst = max(worst, float(np.max(errors[tau][1:] / b[1:])))
        ratios[tau] = float(errors[tau][-1] / b[-1])
    spread = max(ratios.values()) / max(min(ratios.values()), 1e-300)
    return {"max_error_over_bound": worst, "final_ratio": ratios, "ratio_spread": spread,
            "holds": worst <= 1.0, "same_order": spread <= ORDER_SPREAD}


def trajectories(loss, theta0, n: int, seeds: int, steps: int, lr, law) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean |h_k - h_0| over seeds, (seeds, steps) |grad|^2, step sizes) of ``seeds`` SGD runs from theta0."""
    errors, grads = [], []
    for s in range(seeds):
        order = torch.Generator().manual_seed(8 + s)
        batches = [torch.randint(0, n, (8,), generator=order) for _ in range(steps)]
        traj = sgd(loss, theta0, lambda k, b=batches: b[k], steps, lr)
        h = np.array([float(law.value(torch.from_numpy(t))) for t in traj.thetas])
        errors.append(np.abs(h - h[0]))
        grads.append(traj.grad_sq)
    return np.mean(errors, axis=0), np.array(grads), traj.lrs


def prop51(quick: bool = True) -> dict:
    """Prop 5.1 on a one-hidden-layer ReLU network: the bound (27) with C_L of (26), constant and decaying steps."""
    from .small import regression_problem

    arch = catalog.relu(4, 6, 3, bias=True)
    x, _, loss = regression_problem(arch, n=64)
    law = arch.law_set()[0]  # |u|^2 - |v|^2 - b^2: Hessian diag(+-2), C_h = 2
    theta0 = arch.space.sample(generator=torch.Generator().manual_seed(7)) * 0.7
    steps, seeds = (100, 4) if quick else (500, 8)
    taus = [0.00125, 0.0025, 0.005, 0.01]
    errors, grad_sq, lrs = {}, {}, {}
    for tau in taus:
        errors[tau], grad_sq[tau], lrs[tau] = trajectories(loss, theta0, len(x), seeds, steps, tau, law)
    constant = check(errors, grad_sq, lrs)
    dec_err, dec_g, dec_lrs = trajectories(loss, theta0, len(x), seeds, steps, lambda k: 0.05 / (k + 1), law)
    dec_bound = bound(sup_constant(dec_g), dec_lrs)
    dec_worst = float(np.max(dec_err[1:] / dec_bound[1:]))
    growth = float(dec_err[-1] / max(dec_err[steps // 2], 1e-300))
    c_l = {tau: sup_constant(grad_sq[tau]) for tau in taus}
    claims = [
        claim("Prop 5.1 bound (27) holds, C_L = sup_k E|grad L|^2", "E|h_k-h_0| <= C_h C_L/2 sum tau^2",
              f"max error/bound {max(constant['max_error_over_bound'], dec_worst):.2f}",
              constant["holds"] and dec_worst <= 1.0),
        claim("Prop 5.1 bound has the error's order tau^2", "error/bound ratio same for tau x8",
              f"ratio spread {constant['ratio_spread']:.2f} (<= {ORDER_SPREAD:g})", constant["same_order"]),
        claim("decaying steps: bounded error", "O(tau_0^2), no growth", f"error(k)/error(k/2) = {growth:.2f}",
              growth < 1.5)]
    result = {"experiment": "prop51", "steps": steps, "seeds": seeds, "learning_rates": taus, "c_h": C_H,
              "c_l": {f"{tau:g}": v for tau, v in c_l.items()},
              "c_l_definition": "C_L = max over steps k of the mean over seeds of |grad L_{Z_k}(theta_k)|^2 (eq. 26)",
              "results": {"constant": {"max_error_over_bound": constant["max_error_over_bound"],
                                       "final_ratio": {f"{t:g}": r for t, r in constant["final_ratio"].items()},
                                       "ratio_spread": constant["ratio_spread"]},
                          "decaying": {"max_error_over_bound": dec_worst, "growth": growth,
                                       "final_error": float(dec_err[-1]), "final_bound": float(dec_bound[-1])}},
              "claims": claims}
    result["protocol_record"] = protocol_record(
        model="one-hidden-layer ReLU network 4-6-3 with biases (float64)",
        data="random regression: 64 Gaussian inputs, teacher targets (seed 0), mini-batches of 8",
        law="h = |u_0|^2 - |v_0|^2 - b_0^2 (first hidden neuron)", law_formula=law.formula,
        learning_rates=[*taus, 0.05], seeds=seeds, steps=steps, batch=8, dtype="torch.float64",
        optimizer="SGD: constant steps tau, and decaying steps 0.05 / (k + 1)")
    result["deviations"] = []
    result["notes"] = ["the paper runs no experiment for Prop 5.1 alone: a numerical check of the theorem",
                       result["c_l_definition"] + f"; C_h = {C_H:g}"]
    return result

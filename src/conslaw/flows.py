"""Training dynamics on a flat float64 parameter vector: gradient flow with weight decay, SGD, sign descent.

- :func:`gradient_flow`: theta' = -grad L(theta) - lambda(t) theta (eq. 3), integrated by scipy's
  adaptive DOP853; returns Lambda(t) = int_0^t lambda as well (Thm 2.1).
- :func:`sgd`: theta_{k+1} = theta_k - tau_k grad L_{Z_k}(theta_k) (Sec 5.1), constant or scheduled steps
  (e.g. tau_k = tau_0 / (k + 1)), optional weight decay (eq. 2).
- :func:`sign_descent`: theta_{k+1} = theta_k - eta sign(grad L(theta_k)), the Adam flow's scheme (eq. 11).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import quad, solve_ivp
from torch.func import grad

from .params import DTYPE

Loss = Callable[..., torch.Tensor]


@dataclass
class Trajectory:
    """A discretized trajectory: times, thetas, integrated weight decay and losses."""
    times: np.ndarray
    thetas: np.ndarray  # (len(times), D)
    Lambda: np.ndarray  # integrated weight decay at each time
    losses: np.ndarray
    grad_sq: np.ndarray | None = None
    lrs: np.ndarray | None = None


def gradient_flow(loss: Loss, theta0: torch.Tensor, t_end: float,
                  weight_decay: Callable[[float], float] | None = None, rtol: float = 1e-10,
                  atol: float = 1e-12, points: int = 41) -> Trajectory:
    """Integrate eq. (3) from theta0 to t_end; loss(theta) is a float64 scalar."""
    weight_decay = weight_decay or (lambda t: 0.0)
    g = grad(loss)

    def rhs(t, y):
        theta = torch.from_numpy(y)
        return (-g(theta) - weight_decay(t) * theta).numpy()

    times = np.linspace(0.0, t_end, points)
    sol = solve_ivp(rhs, (0.0, t_end), theta0.detach().to(DTYPE).numpy(), method="DOP853", rtol=rtol, atol=atol,
                    t_eval=times)
    if not sol.success:
        raise RuntimeError(f"the ODE solver failed: {sol.message}")
    lam = np.array([quad(weight_decay, 0.0, t)[0] if t > 0 else 0.0 for t in times])
    losses = np.array([float(loss(torch.from_numpy(y))) for y in sol.y.T])
    return Trajectory(times, sol.y.T.copy(), lam, losses)


def sgd(loss: Loss, theta0: torch.Tensor, batches: Callable[[int], tuple], steps: int,
        lr: float | Callable[[int], float], weight_decay: float = 0.0) -> Trajectory:
    """Mini-batch SGD: loss(theta, batch); batches(k) gives batch k."""
    schedule = lr if callable(lr) else (lambda k, lr=lr: lr)
    g = grad(loss)
    theta = theta0.detach().to(DTYPE).clone()
    thetas, losses, grad_sq, lrs, lam = [theta.numpy().copy()], [], [], [], [0.0]
    for k in range(steps):
        batch = batches(k)
        gk = g(theta, batch)
        tau = schedule(k)
        losses.append(float(loss(theta, batch)))
        grad_sq.append(float(gk.square().sum()))
        lrs.append(tau)
        theta = theta - tau * gk - tau * weight_decay * theta
        lam.append(lam[-1] - np.log1p(-tau * weight_decay))
        thetas.append(theta.numpy().copy())
    return Trajectory(np.arange(steps + 1), np.array(thetas), np.array(lam), np.array(losses),
                      np.array(grad_sq), np.array(lrs))


def sign_descent(loss: Loss, theta0: torch.Tensor, steps: int, lr: float) -> Trajectory:
    """theta <- theta - lr sign(grad L(theta)) (eq. 11, the simplified Adam)."""
    g = grad(loss)
    theta = theta0.detach().to(DTYPE).clone()
    thetas, losses = [theta.numpy().copy()], []
    for _ in range(steps):
        losses.append(float(loss(theta)))
        theta = theta - lr * torch.sign(g(theta))
        thetas.append(theta.numpy().copy())
    return Trajectory(np.arange(steps + 1), np.array(thetas), np.zeros(steps + 1), np.array(losses))


def fit_exponent(lrs, errors) -> float:
    """p in error ~ lr^p: least-squares slope of log(error) on log(lr); NaN when an error is 0 or not finite.

    (An error of exactly 0 at some learning rate, e.g. a monitor that never records a change, has no
    exponent: NaN makes every claim on it FAIL.)
    """
    errors = np.asarray(errors, dtype=float)
    if not np.all(np.isfinite(errors) & (errors > 0)):
        return float("nan")
    x, y = np.log(np.asarray(lrs, dtype=float)), np.log(errors)
    return float(np.polyfit(x, y, 1)[0])

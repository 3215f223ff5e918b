"""Rebalancing: move along the symmetry orbits so that conservation laws reach a target.

Gradient flow keeps every law at its initial value; rebalancing instead moves
the parameters along the orbits of the symmetries that generate the laws, with
the network's function unchanged, until the laws reach a target (0: balanced,
as in Stock et al. 2019's equi-normalization and Saul 2023):

- **rescaling laws** (per neuron, per channel, per residual-stream channel,
  LayerNorm/BatchNorm affines): unit k's incoming parameters are multiplied by
  e^{s_k} and its outgoing ones by e^{-s_k}. All units at once: theta' =
  theta * exp(A s), and the laws are h(s) = -A^T(theta^2 e^{2 A s}). h(s) = t is
  the minimum of the convex potential 1/2 sum_i theta_i^2 e^{2 (A s)_i} + t.s,
  found by Newton's method with backtracking (its Hessian A^T diag(w) A is
  positive definite);
- **attention laws** per head (Q Q^T - K K^T, V V^T - O^T O, biases appended):
  Q_h <- P^{1/2} Q_h, K_h <- P^{-1/2} K_h with P the geometric mean solving
  P M P = N (M = Q_h Q_h^T, N = K_h K_h^T), which leaves Q_h^T K_h unchanged and
  makes the law 0; the same for V_h and the columns of O_h.

Both are repeated until every targeted law is at its target to round-off.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import spsolve
from torch import nn

from .errors import ConslawError
from .nn.find import find_laws
from .nn.laws_nn import ModuleLaw
from .params import DTYPE, ParamSpace


@dataclass
class RebalanceResult:
    model: nn.Module
    laws: list[ModuleLaw]
    before: np.ndarray
    after: np.ndarray
    targets: np.ndarray
    iterations: int
    heads: int
    notes: list[str] = field(default_factory=list)

    @property
    def max_error(self) -> float:
        """max |h(theta') - target| over the rebalanced laws (rescaling and attention)."""
        return float(np.max(np.abs(self.after - self.targets))) if self.after.size else 0.0

    def as_dict(self) -> dict:
        before = float(np.max(np.abs(self.before - self.targets))) if self.before.size else 0.0
        return {"laws": len(self.laws), "attention_heads": self.heads, "max_error_before": before,
                "max_error_after": self.max_error, "iterations": self.iterations, "notes": self.notes}


def rescaling_system(laws: list[ModuleLaw], D: int) -> sp.csr_matrix:
    """A (D x L): +1 where coordinate i is on the incoming side of law j, -1 on its outgoing side."""
    rows, cols, vals = [], [], []
    for j, law in enumerate(laws):
        qi, qj, qc = law.law.quad
        if not torch.equal(qi, qj):
            raise ConslawError(f"law {law.law.name!r} is not a difference of squared norms", "report this")
        rows.append(qi.numpy())
        cols.append(np.full(qi.numel(), j))
        vals.append(-np.sign(qc.numpy()))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(D, len(laws)))


def solve_rescaling(theta: np.ndarray, A: sp.csr_matrix, target: float, tol: float = 1e-14,
                    max_iter: int = 100) -> np.ndarray:
    """s with h(s) = -A^T(theta^2 e^{2 A s}) = target, by damped Newton on the convex potential."""
    sq = theta ** 2
    s = np.zeros(A.shape[1])
    t = np.full(A.shape[1], target)

    def potential(s):
        return 0.5 * float(sq @ np.exp(2 * (A @ s))) + float(t @ s)

    scale = max(1.0, float(np.abs(A.T @ sq).max()))
    for _ in range(max_iter):
        w = sq * np.exp(2 * (A @ s))
        residual = -(A.T @ w) - t  # h(s) - target; the potential's gradient is its negative
        if np.abs(residual).max() < tol * scale:
            break
        hessian = (A.T @ sp.diags(2 * w) @ A).tocsc()
        step = spsolve(hessian, residual)
        step = np.atleast_1d(step)
        value, rate = potential(s), 1.0
        while potential(s + rate * step) > value - 1e-4 * rate * float(residual @ step) and rate > 1e-12:
            rate /= 2
        s = s + rate * step
    return s


def geometric_mean(m: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """The symmetric positive definite P with P M P = N."""
    evals, evecs = torch.linalg.eigh(m)
    if evals.min() <= 1e-300:
        raise ConslawError("an attention head's Gram matrix is singular: it cannot be balanced",
                           "use a head dimension <= embed_dim + 1 and generic weights")
    root = evecs @ torch.diag(evals.sqrt()) @ evecs.T
    inv_root = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    e2, v2 = torch.linalg.eigh(root @ n @ root)
    middle = v2 @ torch.diag(e2.clamp_min(0).sqrt()) @ v2.T
    return inv_root @ middle @ inv_root


def sym_power(p: torch.Tensor, power: float) -> torch.Tensor:
    evals, evecs = torch.linalg.eigh(p)
    return evecs @ torch.diag(evals ** power) @ evecs.T


def _head_rows(w: torch.Tensor, b: torch.Tensor | None, rows: slice) -> torch.Tensor:
    """Rows of a packed projection with the bias appended as a last column."""
    return torch.cat([w[rows], b[rows].unsqueeze(1)], dim=1) if b is not None else w[rows].clone()


def _set_head_rows(w: torch.Tensor, b: torch.Tensor | None, rows: slice, value: torch.Tensor) -> None:
    w[rows] = value[:, :w.shape[1]]
    if b is not None:
        b[rows] = value[:, w.shape[1]]


@torch.no_grad()
def balance_attention(mha: nn.MultiheadAttention) -> None:
    """Per head: Q Q^T = K K^T and V V^T = O^T O (biases appended), function unchanged."""
    if not mha._qkv_same_embed_dim:
        raise ConslawError("only packed nn.MultiheadAttention (kdim = vdim = embed_dim) is rebalanced",
                           "use the same embedding dimension for query, key and value")
    e, h = mha.embed_dim, mha.num_heads
    dh = e // h
    w, b, out = mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight
    for head in range(h):
        rq, rk, rv = (slice(off + head * dh, off + (head + 1) * dh) for off in (0, e, 2 * e))
        q, k = _head_rows(w, b, rq), _head_rows(w, b, rk)
        p = geometric_mean(q @ q.T, k @ k.T)
        _set_head_rows(w, b, rq, sym_power(p, 0.5) @ q)
        _set_head_rows(w, b, rk, sym_power(p, -0.5) @ k)
        cols = slice(head * dh, (head + 1) * dh)
        v, o = _head_rows(w, b, rv), out[:, cols].clone()
        p = geometric_mean(v @ v.T, o.T @ o)
        _set_head_rows(w, b, rv, sym_power(p, 0.5) @ v)
        out[:, cols] = o @ sym_power(p, -0.5)


def rebalance(model: nn.Module, example_input: torch.Tensor, loss: str = "mse", target: float = 0.0,
              max_rounds: int = 20, tol: float = 1e-12) -> RebalanceResult:
    """A float64 copy of ``model`` whose rescaling laws equal ``target`` and whose attention heads are balanced.

    The model's function is unchanged (the moves are exact symmetries); the
    approximate BatchNorm scale invariances are not used, since they are not.
    """
    work = copy.deepcopy(model).to(DTYPE)
    found = find_laws(work, example_input, loss, numeric=False)
    space = ParamSpace.from_module(work)
    laws = [law for law in found.laws if law.status == "exact" and law.family.startswith("rescaling")]
    mhas = [m for m in work.modules() if isinstance(m, nn.MultiheadAttention)]
    attention = [law for law in found.laws if law.status == "exact" and law.family == "attention"
                 and not law.module.endswith(tuple(f".{x}" for x in "qkvo"))]
    if not laws and not mhas:
        raise ConslawError("the model has no rescaling or attention laws to rebalance",
                           "rebalance models with ReLU/linear units, normalization affines or attention")
    if target != 0.0 and mhas:
        raise ConslawError("attention heads can only be balanced to 0", "use target=0")
    A = rescaling_system(laws, space.D) if laws else None

    def theta() -> torch.Tensor:
        return space.flatten(dict(work.named_parameters())).detach()

    def values() -> np.ndarray:
        t = theta()
        return np.array([float(law.law.value(t)) for law in laws + attention])

    targets = np.r_[np.full(len(laws), target), np.zeros(len(attention))]
    before = values()
    scale = max(1.0, float(np.abs(before).max()))
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        for mha in mhas:
            balance_attention(mha)
        if A is not None:
            t = theta().numpy()
            scaled = torch.from_numpy(t * np.exp(A @ solve_rescaling(t, A, target)))
            with torch.no_grad():
                for name, p in work.named_parameters():
                    p.copy_(scaled[space.slice(name)].reshape(p.shape))
        if np.abs(values() - targets).max() < tol * scale:
            break
    return RebalanceResult(model=work, laws=laws + attention, before=before, after=values(), targets=targets,
                           iterations=rounds, heads=sum(m.num_heads for m in mhas))

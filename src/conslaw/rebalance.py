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
from .fields.model_io import model_output
from .laws import QuadraticLaw
from .nn import MHALayout, find_laws
from .nn.analysis import analysis_copy, as_float64, call_args
from .params import DTYPE, ParamSpace


@dataclass
class RebalanceResult:
    """The rebalanced float64 copy, the laws moved, their values before and after, and the output change."""

    model: nn.Module
    laws: list[QuadraticLaw]
    before: np.ndarray
    after: np.ndarray
    targets: np.ndarray
    iterations: int
    heads: int
    max_output_change: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def max_error(self) -> float:
        """max |h(theta') - target| over the rebalanced laws (rescaling and attention)."""
        return float(np.max(np.abs(self.after - self.targets))) if self.after.size else 0.0

    def as_dict(self) -> dict:
        """JSON-ready summary: laws moved, heads, errors before/after, rounds, output change."""
        before = float(np.max(np.abs(self.before - self.targets))) if self.before.size else 0.0
        return {"laws": len(self.laws), "attention_heads": self.heads, "max_error_before": before,
                "max_error_after": self.max_error, "iterations": self.iterations,
                "max_output_change": self.max_output_change, "notes": self.notes}


def rescaling_system(laws: list[QuadraticLaw], D: int) -> sp.csr_matrix:
    """A (D x L): +1 where coordinate i is on the incoming side of law j, -1 on its outgoing side."""
    rows, cols, vals = [], [], []
    for j, law in enumerate(laws):
        qi, qj, qc = law.quad
        if not torch.equal(qi, qj):
            raise ConslawError(f"law {law.name!r} is not a difference of squared norms", "report this")
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
    """p^power for a symmetric positive definite p (eigendecomposition)."""
    evals, evecs = torch.linalg.eigh(p)
    return evecs @ torch.diag(evals ** power) @ evecs.T


def _rows(w: torch.Tensor, b: torch.Tensor | None, rows: slice, bias_rows: slice) -> torch.Tensor:
    """Rows of a projection with the bias appended as a last column."""
    return torch.cat([w[rows], b[bias_rows].unsqueeze(1)], dim=1) if b is not None else w[rows].clone()


def _set_rows(w: torch.Tensor, b: torch.Tensor | None, rows: slice, bias_rows: slice, value: torch.Tensor) -> None:
    w[rows] = value[:, :w.shape[1]]
    if b is not None:
        b[bias_rows] = value[:, w.shape[1]]


@torch.no_grad()
def balance_attention(name: str, mha: nn.MultiheadAttention) -> None:
    """Per head: Q Q^T = K K^T and V V^T = O^T O (biases appended), function unchanged."""
    layout = MHALayout.of(name, mha)
    params = dict(mha.named_parameters())

    def local(pname: str) -> torch.Tensor:
        return params[pname[len(name) + 1:]]

    b = local(layout.bias) if layout.bias else None
    out = mha.out_proj.weight
    for head in range(layout.num_heads):
        (rq, bq), (rk, bk), (rv, bv) = (layout.rows(w, head) for w in "qkv")
        wq, wk, wv = (local(layout.weight(w)[0]) for w in "qkv")
        q, k = _rows(wq, b, rq, bq), _rows(wk, b, rk, bk)
        p = geometric_mean(q @ q.T, k @ k.T)
        _set_rows(wq, b, rq, bq, sym_power(p, 0.5) @ q)
        _set_rows(wk, b, rk, bk, sym_power(p, -0.5) @ k)
        cols = slice(head * layout.head_dim, (head + 1) * layout.head_dim)
        v, o = _rows(wv, b, rv, bv), out[:, cols].clone()
        p = geometric_mean(v @ v.T, o.T @ o)
        _set_rows(wv, b, rv, bv, sym_power(p, 0.5) @ v)
        out[:, cols] = o @ sym_power(p, -0.5)


def rebalance(model: nn.Module, example_input: torch.Tensor, loss: str = "mse", target: float = 0.0,
              max_rounds: int = 20, tol: float = 1e-12, in_place: bool = False) -> RebalanceResult:
    """A float64 copy of ``model`` whose rescaling laws equal ``target`` and whose attention heads are balanced.

    The model's function is unchanged (the moves are exact symmetries; the result reports the
    relative output change measured on random inputs); the approximate BatchNorm scale
    invariances are not used, since they are not exact symmetries. ``model`` itself is left
    untouched (parameters, dtype, device, training flag) unless ``in_place``, in which case the
    rebalanced values are copied into its parameters (in their own dtype).

    Args:
        model: the model.
        example_input: a batch of inputs, batch first.
        loss: the training loss (``mse`` or ``cross_entropy``).
        target: the value every rescaling law is moved to (attention heads: 0 only).
        max_rounds: alternations of attention and rescaling balancing.
        tol: stop when every law is within tol * scale of its target.
        in_place: also write the result into ``model``'s parameters.
    """
    import math

    if not isinstance(target, int | float) or not math.isfinite(target):
        raise ConslawError(f"target must be a finite number, got {target!r}", "use e.g. --target 0")
    original = analysis_copy(model)
    work = copy.deepcopy(model).to(DTYPE)
    found = find_laws(work, example_input, loss, numeric=False)
    space = ParamSpace.from_module(work)
    laws = [c.law for c in found.select(family="rescaling")] + \
        [c.law for c in found.select(family="rescaling (residual stream)")]
    mhas = {name: m for name, m in work.named_modules() if isinstance(m, nn.MultiheadAttention)}
    attention = [c.law for c in found.select(family="attention") if c.law.module in mhas]
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
        return np.array([float(law.value(t)) for law in laws + attention])

    targets = np.r_[np.full(len(laws), target), np.zeros(len(attention))]
    before = values()
    scale = max(1.0, float(np.abs(before).max()))
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        for name, mha in mhas.items():
            balance_attention(name, mha)
        if A is not None:
            t = theta().numpy()
            scaled = torch.from_numpy(t * np.exp(A @ solve_rescaling(t, A, target)))
            with torch.no_grad():
                for name, p in work.named_parameters():
                    p.copy_(scaled[space.slice(name)].reshape(p.shape))
        if np.abs(values() - targets).max() < tol * scale:
            break
    change = output_change(original, analysis_copy(work), found_inputs(example_input))
    if in_place:
        with torch.no_grad():
            rebalanced = dict(work.named_parameters())
            for name, p in model.named_parameters():
                p.copy_(rebalanced[name].to(p.dtype))
    return RebalanceResult(model=work, laws=laws + attention, before=before, after=values(), targets=targets,
                           iterations=rounds, heads=sum(m.num_heads for m in mhas.values()),
                           max_output_change=change)


def found_inputs(example, n: int = 8):
    """Inputs to compare outputs on: random float64 inputs shaped like the example, or the example's tokens,
    or a structured example (tuple, dict: a Hugging Face batch) itself, its floating tensors in float64."""
    if not isinstance(example, torch.Tensor):
        return as_float64(example)
    if not torch.is_floating_point(example):
        return example
    return torch.randn(n, *example.shape[1:], dtype=DTYPE, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def output_change(before: nn.Module, after: nn.Module, x) -> float:
    """max |f_after(x) - f_before(x)| / max |f_before(x)| (the output the loss reads: a ModelOutput's logits)."""
    args, kwargs = call_args(x)
    a, b = model_output(before(*args, **kwargs)), model_output(after(*args, **kwargs))
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-300))

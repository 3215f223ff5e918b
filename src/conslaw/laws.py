"""Conservation laws as objects: value, closed-form gradient, parameters touched.

A :class:`Law` h: R^D -> R is conserved by gradient flow iff grad h(theta) is
orthogonal to every field of W (Prop 2.3) and to their brackets (Prop 2.9).
:class:`QuadraticLaw` covers the paper's closed forms (all quadratic or
linear in theta): h(theta) = sum_t c_t theta_{i_t} theta_{j_t} + sum_s l_s theta_{k_s},
with value and gradient in closed form. :class:`LawSet` counts independent
laws at theta (Def. 2.10: linearly independent gradients).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch.func import grad

from .fields import FieldSource
from .params import DTYPE, ParamSpace
from .rank import DEFAULT_RTOL, RankResult, numerical_rank


@dataclass
class Law:
    """A scalar function of theta, with a readable formula and the parameters it touches."""

    name: str
    formula: str
    params: tuple[str, ...]
    value_fn: Callable[[torch.Tensor], torch.Tensor]
    grad_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    kind: str = "closed-form"
    latex: str = ""

    def value(self, theta: torch.Tensor) -> torch.Tensor:
        return self.value_fn(theta)

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        """Closed-form gradient when known, autograd otherwise."""
        if self.grad_fn is not None:
            return self.grad_fn(theta)
        return grad(self.value_fn)(theta)

    def autograd(self, theta: torch.Tensor) -> torch.Tensor:
        """The gradient by autograd, as a cross-check of :meth:`grad`."""
        return grad(self.value_fn)(theta)


@dataclass
class QuadraticLaw(Law):
    """h(theta) = sum_t c_t theta_{i_t} theta_{j_t} + sum_s l_s theta_{k_s}."""

    quad: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = field(default=None, repr=False)
    lin: tuple[torch.Tensor, torch.Tensor] = field(default=None, repr=False)

    @classmethod
    def build(cls, name: str, formula: str, params: Sequence[str],
              quad: Iterable[tuple[int, int, float]] = (),
              lin: Iterable[tuple[int, float]] = ()) -> QuadraticLaw:
        quad, lin = list(quad), list(lin)
        return cls.from_tensors(
            name, formula, params,
            torch.tensor([t[0] for t in quad], dtype=torch.long), torch.tensor([t[1] for t in quad], dtype=torch.long),
            torch.tensor([t[2] for t in quad], dtype=DTYPE),
            torch.tensor([t[0] for t in lin], dtype=torch.long), torch.tensor([t[1] for t in lin], dtype=DTYPE))

    @classmethod
    def from_tensors(cls, name: str, formula: str, params: Sequence[str], qi: torch.Tensor, qj: torch.Tensor,
                     qc: torch.Tensor, lk: torch.Tensor | None = None, lc: torch.Tensor | None = None) -> QuadraticLaw:
        """The law sum_t qc_t theta_{qi_t} theta_{qj_t} + sum_s lc_s theta_{lk_s} from index tensors."""
        lk = torch.zeros(0, dtype=torch.long) if lk is None else lk
        lc = torch.zeros(0, dtype=DTYPE) if lc is None else lc

        def value(theta: torch.Tensor) -> torch.Tensor:
            return (qc * theta[qi] * theta[qj]).sum() + (lc * theta[lk]).sum()

        def gradient(theta: torch.Tensor) -> torch.Tensor:
            g = torch.zeros_like(theta)
            g = g.index_add(0, qi, qc * theta[qj]).index_add(0, qj, qc * theta[qi])
            return g.index_add(0, lk, lc)

        return cls(name=name, formula=formula, params=tuple(params), value_fn=value,
                   grad_fn=gradient, quad=(qi, qj, qc), lin=(lk, lc))

    def sparse_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(support indices, gradient on them): the gradient without a length-D vector."""
        qi, qj, qc = self.quad
        lk, lc = self.lin
        support, inverse = torch.unique(torch.cat([qi, qj, lk]), return_inverse=True)
        n_q = qi.numel()
        ii, jj, kk = inverse[:n_q], inverse[n_q:2 * n_q], inverse[2 * n_q:]
        g = torch.zeros(support.numel(), dtype=theta.dtype)
        g = g.index_add(0, ii, qc * theta[qj]).index_add(0, jj, qc * theta[qi]).index_add(0, kk, lc)
        return support, g

    @classmethod
    def inner_difference(cls, name: str, formula: str, params: Sequence[str],
                         plus: Sequence[tuple[torch.Tensor, torch.Tensor]],
                         minus: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> QuadraticLaw:
        """sum over ``plus`` pairs (a, b) of <theta_a, theta_b> minus the same over ``minus``.

        Each a, b is a tensor of flat indices; a = b gives a squared norm.
        """
        qi, qj, qc = [], [], []
        for sign, pairs in ((1.0, plus), (-1.0, minus)):
            for a, b in pairs:
                a, b = a.reshape(-1), b.reshape(-1)
                qi.append(a)
                qj.append(b)
                qc.append(torch.full((a.numel(),), sign, dtype=DTYPE))
        if not qi:
            return cls.from_tensors(name, formula, params, torch.zeros(0, dtype=torch.long),
                                    torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=DTYPE))
        return cls.from_tensors(name, formula, params, torch.cat(qi), torch.cat(qj), torch.cat(qc))


class LawSet:
    """An ordered collection of laws with their joint rank at theta."""

    def __init__(self, space: ParamSpace, laws: Iterable[Law] = ()) -> None:
        self.space = space
        self.laws = list(laws)

    def __len__(self) -> int:
        return len(self.laws)

    def __iter__(self):
        return iter(self.laws)

    def __getitem__(self, i: int) -> Law:
        return self.laws[i]

    def values(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.stack([law.value(theta) for law in self.laws]) if self.laws else torch.zeros(0)

    def gradients(self, theta: torch.Tensor) -> torch.Tensor:
        """(number of laws, D): the closed-form gradients at theta."""
        if not self.laws:
            return torch.zeros(0, self.space.D, dtype=DTYPE)
        return torch.stack([law.grad(theta) for law in self.laws])

    def rank(self, theta: torch.Tensor, rtol: float = DEFAULT_RTOL) -> RankResult:
        """Number of independent laws at theta (Def. 2.10), with the spectral gap."""
        return numerical_rank(self.gradients(theta), rtol)

    def residuals(self, source: FieldSource, theta: torch.Tensor, n: int = 64,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """Per law, max over n sampled fields chi of |<grad h, chi>| / (|grad h| |chi|)."""
        generator = generator or torch.Generator().manual_seed(0)
        chis = source.evaluate(theta, source.sample(n, generator))
        grads = self.gradients(theta)
        denom = grads.norm(dim=1, keepdim=True) * chis.norm(dim=1).unsqueeze(0)
        cos = (grads @ chis.T).abs() / denom.clamp_min(1e-300)
        return torch.where(denom > 0, cos, torch.zeros_like(cos)).max(dim=1).values

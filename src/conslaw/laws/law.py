"""Conservation laws as declared objects: value, closed-form gradient, and the structure they came from.

A :class:`Law` h: R^D -> R is conserved by gradient flow iff grad h(theta) is
orthogonal to every field of W (Prop 2.3) and to their brackets (Prop 2.9).
Besides its value and gradient a law declares where it comes from, so that
laws are selected by structure, never by parsing a display name:

- ``family``: the law family (``rescaling``, ``attention``, ``translation``, ...);
- ``module``: the module (or block) it belongs to;
- ``unit``: the unit(s) it is about, e.g. ``(k,)`` for neuron k, ``(a, b)`` for entry (a, b) of a matrix law;
- ``head``: the attention head, when there is one;
- ``matrix``: the matrix law it is an entry of (e.g. ``Q Q^T - K K^T``): entries of one
  matrix form a Frobenius group;
- ``approximate_cause``: why it may hold only approximately (the eps of a normalization);
- ``norm_terms``: for sums of squared norms of slots, the signed slots, which lets a monitor
  evaluate it from per-axis norms of the parameters.

:class:`QuadraticLaw` covers the paper's closed forms (all quadratic or linear in theta):
h(theta) = sum_t c_t theta_{i_t} theta_{j_t} + sum_s l_s theta_{k_s}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch.func import grad

from ..params import DTYPE
from .slots import Slot

Terms = tuple[tuple[float, Slot], ...]


@dataclass(frozen=True, eq=False)
class Law:
    """A scalar function of theta, with a readable formula, the parameters it touches and its origin.

    Args:
        name: a readable identifier (display only).
        formula: the formula in parameter names.
        params: names of the parameters it depends on.
        value_fn: theta -> h(theta).
        grad_fn: theta -> grad h(theta) in closed form (autograd when None).
        origin: ``closed-form`` (catalog), ``found`` (find_laws), ``discovered`` (discover).
        latex: LaTeX of the formula, when known.
        family, module, unit, head, matrix, approximate_cause, norm_terms: the declared structure
            (see the module docstring).
    """

    name: str
    formula: str
    params: tuple[str, ...]
    value_fn: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    grad_fn: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    origin: str = "closed-form"
    latex: str = ""
    family: str | None = None
    module: str | None = None
    unit: tuple[int, ...] = ()
    head: int | None = None
    matrix: str | None = None
    approximate_cause: str | None = None
    norm_terms: Terms = field(default=(), repr=False)

    def value(self, theta: torch.Tensor) -> torch.Tensor:
        """h(theta)."""
        return self.value_fn(theta)

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        """grad h(theta): closed form when known, autograd otherwise."""
        if self.grad_fn is not None:
            return self.grad_fn(theta)
        return grad(self.value_fn)(theta)

    def autograd(self, theta: torch.Tensor) -> torch.Tensor:
        """The gradient by autograd, as a cross-check of :meth:`grad`."""
        return grad(self.value_fn)(theta)

    def sparse_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(support indices, gradient on them); here the nonzero entries of the dense gradient."""
        g = self.grad(theta)
        support = g.nonzero().flatten()
        return support, g[support]

    def as_dict(self) -> dict:
        """JSON-ready description: name, formula, latex, params and the declared structure."""
        return {"name": self.name, "formula": self.formula, "latex": self.latex, "params": list(self.params),
                "origin": self.origin, "family": self.family, "module": self.module, "unit": list(self.unit),
                "head": self.head, "matrix": self.matrix}

    def __repr__(self) -> str:
        from ..display import truncate

        return f"Law({self.name!r}: {truncate(self.formula)})"

    def _repr_latex_(self) -> str:
        from ..display import law_latex

        return f"${law_latex(self)}$"


@dataclass(frozen=True, eq=False, repr=False)
class QuadraticLaw(Law):
    """h(theta) = sum_t c_t theta_{i_t} theta_{j_t} + sum_s l_s theta_{k_s}, with the index tensors declared.

    ``quad`` = (i, j, c) and ``lin`` = (k, l) are long tensors of indices and float64 tensors of coefficients
    (int8 when they are signs, as the builders of differences of norms and sums write them).
    """

    quad: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = field(default=None, repr=False)  # type: ignore[assignment]
    lin: tuple[torch.Tensor, torch.Tensor] = field(default=None, repr=False)  # type: ignore[assignment]

    @classmethod
    def build(cls, name: str, formula: str, params: Sequence[str],
              quad: Iterable[tuple[int, int, float]] = (),
              lin: Iterable[tuple[int, float]] = (), **structure) -> QuadraticLaw:
        """The law from lists of (i, j, c) quadratic and (k, l) linear terms.

        Args:
            name: display name.
            formula: the formula in parameter names.
            params: the parameters it touches.
            quad: terms c * theta_i * theta_j.
            lin: terms l * theta_k.
            **structure: declared fields of :class:`Law` (family, module, unit, ...).
        """
        quad, lin = list(quad), list(lin)
        return cls.from_tensors(
            name, formula, params,
            torch.tensor([t[0] for t in quad], dtype=torch.long), torch.tensor([t[1] for t in quad], dtype=torch.long),
            torch.tensor([t[2] for t in quad], dtype=DTYPE),
            torch.tensor([t[0] for t in lin], dtype=torch.long), torch.tensor([t[1] for t in lin], dtype=DTYPE),
            **structure)

    @classmethod
    def from_tensors(cls, name: str, formula: str, params: Sequence[str], qi: torch.Tensor, qj: torch.Tensor,
                     qc: torch.Tensor, lk: torch.Tensor | None = None, lc: torch.Tensor | None = None,
                     **structure) -> QuadraticLaw:
        """The law sum_t qc_t theta_{qi_t} theta_{qj_t} + sum_s lc_s theta_{lk_s} from index tensors.

        Args:
            name: display name.
            formula: the formula in parameter names.
            params: the parameters it touches.
            qi: first indices of the quadratic terms.
            qj: second indices of the quadratic terms.
            qc: coefficients of the quadratic terms.
            lk: indices of the linear terms (none when None).
            lc: coefficients of the linear terms.
            **structure: declared fields of :class:`Law` (family, module, unit, ...).
        """
        lk = torch.zeros(0, dtype=torch.long) if lk is None else lk
        lc = torch.zeros(0, dtype=DTYPE) if lc is None else lc

        def value(theta: torch.Tensor) -> torch.Tensor:
            return (qc * theta[qi] * theta[qj]).sum() + (lc * theta[lk]).sum()

        def gradient(theta: torch.Tensor) -> torch.Tensor:
            g = torch.zeros_like(theta)
            g = g.index_add(0, qi, qc * theta[qj]).index_add(0, qj, qc * theta[qi])
            return g.index_add(0, lk, lc.to(g.dtype))

        structure.setdefault("origin", "closed-form")
        return cls(name=name, formula=formula, params=tuple(params), value_fn=value, grad_fn=gradient,
                   quad=(qi, qj, qc), lin=(lk, lc), **structure)

    @classmethod
    def inner_difference(cls, name: str, formula: str, params: Sequence[str],
                         plus: Sequence[tuple[torch.Tensor, torch.Tensor]],
                         minus: Sequence[tuple[torch.Tensor, torch.Tensor]], **structure) -> QuadraticLaw:
        """sum over ``plus`` pairs (a, b) of <theta_a, theta_b> minus the same over ``minus``.

        Each a, b is a tensor of flat indices; a = b gives a squared norm.

        Args:
            name: display name.
            formula: the formula in parameter names.
            params: the parameters it touches.
            plus: index pairs whose inner products are added.
            minus: index pairs whose inner products are subtracted.
            **structure: declared fields of :class:`Law`.
        """
        empty = torch.zeros(0, dtype=torch.long)
        # the coefficients are signs: int8 (exact, and 1 byte a term instead of 8 for the laws of a 100M model)
        qi, qj, qc = [empty], [empty], [torch.zeros(0, dtype=torch.int8)]
        squares = all(a is b for pairs in (plus, minus) for a, b in pairs)
        for sign, pairs in ((1.0, plus), (-1.0, minus)):
            for a, b in pairs:
                a, b = a.reshape(-1), b.reshape(-1)
                qi.append(a)
                qj.append(b)
                qc.append(torch.full((a.numel(),), int(sign), dtype=torch.int8))
        first, coef = torch.cat(qi), torch.cat(qc)
        if squares:  # squared norms only (every pair (a, a)): one index tensor for both factors, sorted so that it
            # is the law's support too (no cache of positions: a third of the memory, and none at verification)
            first, order = torch.sort(first)
            return cls.from_tensors(name, formula, params, first, first, coef[order], **structure)
        return cls.from_tensors(name, formula, params, first, torch.cat(qj), coef, **structure)

    def _local_indices(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(support, i, j, k as positions in the support), computed once per law; None for a law whose own index
        tensor is its support (strictly increasing squares only, or linear terms only: nothing to cache)."""
        cached = self.__dict__.get("_local")
        if cached is None and self._own_support() is not None:
            return None
        if cached is None:
            qi, qj, _ = self.quad
            same = qj is qi  # squared norms (inner_difference): one index tensor, one set of positions
            support, inverse = torch.unique(torch.cat([qi, self.lin[0]] if same else [qi, qj, self.lin[0]]),
                                            return_inverse=True)
            n_q = qi.numel()
            if support.numel() < 2**31:  # positions in the support as int32: half the memory of the cache
                inverse = inverse.to(torch.int32)
            second = inverse[:n_q] if same else inverse[n_q:2 * n_q]
            cached = (support, inverse[:n_q], second, inverse[(1 if same else 2) * n_q:])
            object.__setattr__(self, "_local", cached)  # a cache of derived data: the law itself is unchanged
        return cached

    def _own_support(self) -> str | None:
        """``squares`` (terms c_t theta_i^2 with i strictly increasing), ``linear`` (linear terms only, strictly
        increasing) or None: then the law's support is its own index tensor and its gradient needs no cache."""
        cached = self.__dict__.get("_own")
        if cached is None:
            qi, qj, _ = self.quad
            lk = self.lin[0]
            cached = ""
            if qj is qi and not lk.numel() and qi.numel() and bool((qi[1:] > qi[:-1]).all()):
                cached = "squares"
            elif not qi.numel() and lk.numel() and bool((lk[1:] > lk[:-1]).all()):
                cached = "linear"
            object.__setattr__(self, "_own", cached)
        return cached or None

    def sparse_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(support indices, gradient on them): the gradient without a length-D vector."""
        qi, qj, qc = self.quad
        lc = self.lin[1]
        own = self._own_support()
        if own == "squares":
            return qi, 2.0 * qc * theta[qi]
        if own == "linear":
            return self.lin[0], lc.to(theta.dtype)
        support, ii, jj, kk = self._local_indices()  # type: ignore[misc]
        g = torch.zeros(support.numel(), dtype=theta.dtype)
        g = g.index_add(0, ii, qc * theta[qj]).index_add(0, jj, qc * theta[qi]).index_add(0, kk, lc.to(g.dtype))
        return support, g

    def absolute(self, name: str) -> QuadraticLaw:
        """The same terms with |coefficients|: a sum of squares that is not conserved (a control)."""
        qi, qj, qc = self.quad
        return QuadraticLaw.from_tensors(name, f"|{self.formula}| (all terms +)", self.params, qi, qj, qc.abs(),
                                         *self.lin, origin="control")


def sum_of_laws(laws: Sequence[QuadraticLaw], name: str, formula: str | None = None) -> QuadraticLaw:
    """The law sum_j h_j (e.g. eq. 17 summed over the channels of a block, as in Figure 1).

    Args:
        laws: quadratic laws to add.
        name: the name of the sum.
        formula: its formula (default: "sum of N laws").
    """
    cat = [torch.cat([getattr(law, attr)[k] for law in laws]) for attr, k in
           (("quad", 0), ("quad", 1), ("quad", 2), ("lin", 0), ("lin", 1))]
    params = tuple(dict.fromkeys(p for law in laws for p in law.params))
    first = laws[0]
    return QuadraticLaw.from_tensors(name, formula or f"sum of {len(laws)} laws", params, *cat,
                                     family=first.family, module=first.module,
                                     norm_terms=tuple(t for law in laws for t in law.norm_terms))

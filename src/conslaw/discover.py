"""Find polynomial conservation laws numerically, in the model's own names.

The predecessor paper's method (Marcotte et al. 2023, Sec 2.4): a polynomial
P(theta) = sum_alpha c_alpha theta^alpha of degree <= k is conserved iff
<grad P(theta), chi(theta)> = 0 for every field chi and every theta (Prop 2.3).
Each sampled pair (theta_j, chi_j) gives one equation, linear in the
coefficients c:

    sum_alpha c_alpha <grad theta^alpha (theta_j), chi_j(theta_j)> = 0.

With more equations than unknowns, the null space of this system (SVD,
float64) is the space of polynomial laws of degree <= k. Its basis is put in
reduced row echelon form (unique for the monomial order) and made sparse
greedily (one law per neuron rather than sums of them), coefficients are
snapped to small rationals when they are, and each law is written in
parameter names (:mod:`conslaw.formula`). The certificate compares the number
of independent laws found at a random theta with the Lie count
D - dim Lie(W)(theta) (Thm 2.11): equal means these laws are all of them.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch
from torch.func import vmap

from .derivative_check import DerivativeCheck, checked_derivatives
from .errors import ConslawError
from .fields import FieldSource, restrict
from .laws import Law, LawSet, QuadraticLaw, compact_formula, latex_formula
from .lie import LieResult, lie_trace_dimension
from .rank import DEFAULT_RTOL, check_rtol, numerical_rank, rank_from_singular_values
from .resources import format_bytes
from .threads import engine_threads

#: refuse equation systems larger than this (bytes of the float64 matrix)
MAX_SYSTEM_BYTES = 4 * 2**30


def monomials(D: int, degree: int, homogeneous: bool = False) -> torch.Tensor:
    """Exponent multisets as index tuples (M, degree), padded with D (the constant 1).

    Order: by degree, then lexicographic in the coordinates (parameter order).
    """
    rows = []
    for k in range(degree if homogeneous else 1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(D), k):
            rows.append(list(combo) + [D] * (degree - k))
    return torch.tensor(rows, dtype=torch.long).reshape(-1, degree)


def monomial_count(D: int, degree: int, homogeneous: bool = False) -> int:
    """Number of monomials of degree <= ``degree`` (or = with ``homogeneous``) in D variables, constant excluded."""
    if homogeneous:
        return math.comb(D + degree - 1, degree)
    return math.comb(D + degree, degree) - 1


def directional_derivatives(theta: torch.Tensor, chi: torch.Tensor, mono: torch.Tensor) -> torch.Tensor:
    """<grad theta^alpha, chi> for every monomial alpha (rows of ``mono``).

    theta, chi: (n, D) batches (or single vectors); result (n, M) (or (M,)).
    d/dt prod_p theta_{i_p} along chi = sum_p chi_{i_p} prod_{q != p} theta_{i_q},
    with theta_D = 1 and chi_D = 0 for the padding.
    """
    single = theta.dim() == 1
    theta, chi = theta.reshape(-1, theta.shape[-1]), chi.reshape(-1, chi.shape[-1])
    t = torch.cat([theta, theta.new_ones(theta.shape[0], 1)], dim=1)[:, mono]  # (n, M, k)
    c = torch.cat([chi, chi.new_zeros(chi.shape[0], 1)], dim=1)[:, mono]
    total = torch.zeros(theta.shape[0], mono.shape[0], dtype=theta.dtype)
    for p in range(mono.shape[1]):
        others = torch.cat([t[:, :, :p], t[:, :, p + 1:]], dim=2).prod(dim=2)
        total = total + c[:, :, p] * others
    return total[0] if single else total


def sample_equations(source: FieldSource, mono: torch.Tensor, n: int, init: str,
                     generator: torch.Generator, batch: int = 256) -> torch.Tensor:
    """n equations, each from a fresh random theta and a fresh random field; unit rows, zero rows dropped."""
    out = []
    for start in range(0, n, batch):
        m = min(batch, n - start)
        thetas = torch.stack([source.space.sample(init, generator) for _ in range(m)])
        chis = vmap(source.field)(thetas, source.sample(m, generator))
        rows = directional_derivatives(thetas, chis, mono)
        norms = rows.norm(dim=1, keepdim=True)
        keep = norms.squeeze(1) > 0
        out.append(rows[keep] / norms[keep])
    return torch.cat(out)


def reduced_row_echelon(basis: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Canonical RREF of the row space of ``basis`` (q x M), pivots in column order."""
    a = basis.copy()
    q, m = a.shape
    row = 0
    for col in range(m):
        if row == q:
            break
        pivot = row + int(np.argmax(np.abs(a[row:, col])))
        if abs(a[pivot, col]) < tol * max(1.0, np.abs(a).max()):
            continue
        a[[row, pivot]] = a[[pivot, row]]
        a[row] /= a[row, col]
        others = [r for r in range(q) if r != row]
        a[others] -= np.outer(a[others, col], a[row])
        row += 1
    return a[:row]


def sparsify(rows: np.ndarray, tol: float = 1e-10, max_passes: int = 20) -> np.ndarray:
    """Greedy sparsest basis: replace a row by row - a * other whenever that has fewer terms.

    Starting from the RREF, this turns sums of laws (as the echelon form can
    give) back into the individual laws, e.g. one law per neuron.
    """
    rows = rows.copy()
    for _ in range(max_passes):
        changed = False
        for i in range(len(rows)):
            for j in range(len(rows)):
                if i == j:
                    continue
                nnz = np.count_nonzero(np.abs(rows[i]) > tol)
                shared = np.flatnonzero((np.abs(rows[i]) > tol) & (np.abs(rows[j]) > tol))
                for c in shared:
                    candidate = rows[i] - rows[i, c] / rows[j, c] * rows[j]
                    candidate[np.abs(candidate) <= tol] = 0.0
                    if np.count_nonzero(candidate) < nnz:
                        rows[i], nnz, changed = candidate, np.count_nonzero(candidate), True
                        break
        if not changed:
            break
    for i in range(len(rows)):  # first term positive with coefficient 1, as in the echelon form
        lead = np.flatnonzero(np.abs(rows[i]) > tol)
        if lead.size:
            rows[i] /= rows[i, lead[0]]
    return rows


def snap(value: float, max_denominator: int = 12, tol: float = 1e-8) -> float | Fraction:
    """A small rational when ``value`` is one (to ``tol``), else the float."""
    frac = Fraction(value).limit_denominator(max_denominator)
    return frac if abs(float(frac) - value) < tol else value


@dataclass
class Discovery:
    """Polynomial laws found, with the completeness certificate."""

    D: int
    degree: int
    homogeneous: bool
    laws: LawSet
    coefficients: list[dict[tuple[int, ...], float | Fraction]]
    lie: LieResult | None
    rank_at_theta: int
    equations: int
    unknowns: int
    null_gap: float | None
    seconds: float
    seed: int
    notes: list[str] = field(default_factory=list)
    basis_size: int = 0
    derivative_check: DerivativeCheck | None = None

    def __repr__(self) -> str:
        return (f"Discovery(D={self.D}, degree {self.degree}: {self.num_laws} laws, lie_laws={self.lie_laws}, "
                f"complete={self.complete})")

    def _repr_html_(self) -> str:
        from .display import law_rows, laws_table

        certified = "" if self.lie_laws is None else f" of D - dim Lie = {self.lie_laws}"
        caption = f"{self.num_laws} polynomial laws of degree <= {self.degree}{certified} (D = {self.D})"
        return laws_table(law_rows(self.laws), caption, ("name", "formula"))

    @property
    def num_laws(self) -> int:
        """Independent polynomial laws found (rank of their gradients at a random theta)."""
        return self.rank_at_theta

    @property
    def lie_laws(self) -> int | None:
        """D - dim Lie(W)(theta) of the certificate (None when not certified)."""
        return None if self.lie is None else self.lie.num_laws

    @property
    def complete(self) -> bool | None:
        """True when the laws found are as many as the Lie count (None when not certified)."""
        return None if self.lie is None else self.num_laws == self.lie_laws

    def as_dict(self) -> dict:
        """The JSON object of ``conslaw discover --json`` (DESIGN.md's CLI contract)."""
        return {
            "D": self.D, "degree": self.degree, "homogeneous": self.homogeneous,
            "num_laws": self.num_laws, "lie_laws": self.lie_laws, "complete": self.complete,
            "polynomial_basis_size": self.basis_size, "equations": self.equations, "unknowns": self.unknowns,
            "null_space_gap": self.null_gap, "seed": self.seed, "seconds": self.seconds,
            "certificate": self.certificate(),
            "derivative_check": None if self.derivative_check is None else self.derivative_check.as_dict(),
            "laws": [law.as_dict() for law in self.laws],
            "notes": self.notes,
        }

    def certificate(self) -> str:
        """The certificate in words: complete, incomplete or inconsistent."""
        if self.lie is None:
            return "not computed"
        if self.complete:
            return (f"complete: {self.num_laws} independent polynomial laws of degree <= {self.degree} "
                    f"= D - dim Lie = {self.lie_laws}")
        if self.lie_laws is not None and self.num_laws < self.lie_laws:
            return (f"incomplete: {self.num_laws} polynomial laws of degree <= {self.degree} but "
                    f"D - dim Lie = {self.lie_laws}: {self.lie_laws - self.num_laws} more law(s) of higher "
                    "degree or not polynomial exist")
        return (f"inconsistent: {self.num_laws} laws found but D - dim Lie = {self.lie_laws}; "
                "increase the sampling or check the rank gaps")


def discover(source: FieldSource, degree: int = 2, *, homogeneous: bool = False, init: str = "gaussian",
             seed: int = 0, margin: int = 32, rtol: float = DEFAULT_RTOL, certify: bool = True,
             max_rounds: int = 8, certify_at: torch.Tensor | None = None,
             block: list[str] | None = None, threads: int | None = None) -> Discovery:
    """All polynomial laws of degree <= ``degree`` of the fields of ``source``.

    Every equation uses a fresh random theta and a fresh random field, so the
    equations span the annihilator with probability one; equations are drawn
    in rounds until at least ``margin`` nonzero ones are redundant (fields
    that vanish at some theta, as ReLU fields do, give empty equations).
    The certificate's Lie count is taken at ``certify_at`` (e.g. a trained
    model's own parameters) when given, else as the median over three random points.

    Args:
        source: the fields (catalog, model or loss-gradient).
        degree: maximal degree K of the polynomials.
        homogeneous: only homogeneous polynomials of degree K.
        init: distribution of the random thetas.
        seed: seed of every random draw.
        margin: redundant equations required before stopping.
        rtol: the rank threshold.
        certify: compare with the Lie count (Thm 2.11).
        max_rounds: rounds of equations at most.
        certify_at: the theta of the certificate (a point of the block's space with ``block``).
        block: parameter names: the laws depending on these only (Prop 4.3).
        threads: intra-op threads (default: :mod:`conslaw.threads`' policy on the number of monomials).
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
        raise ConslawError(f"degree must be an integer >= 1, got {degree!r}", "use --degree 2 for quadratic laws")
    size = monomial_count(source.space.D, degree, homogeneous)
    with engine_threads(size if size < 10**9 else 10**9, threads):
        return _discover(source, degree, homogeneous, init, seed, margin, rtol, certify, max_rounds, certify_at,
                         block)


def _discover(source: FieldSource, degree: int, homogeneous: bool, init: str, seed: int, margin: int, rtol: float,
              certify: bool, max_rounds: int, certify_at: torch.Tensor | None,
              block: list[str] | None) -> Discovery:
    start = time.perf_counter()
    rtol = check_rtol(rtol)
    source = restrict(source, block, init)
    space = source.space
    D = space.D
    unknowns = monomial_count(D, degree, homogeneous)
    size = (unknowns + margin) * unknowns * 8
    if size > MAX_SYSTEM_BYTES:
        count = f"{unknowns:,}" if unknowns < 10**15 else f"about 10^{math.log10(unknowns):.0f}"
        raise ConslawError(f"degree {degree} in D = {D} variables has {count} monomials: the equation "
                           f"system would take {format_bytes(size)} (limit {format_bytes(MAX_SYSTEM_BYTES)})",
                           "lower the degree, use --homogeneous, or restrict to a block")
    mono = monomials(D, degree, homogeneous)
    gen = torch.Generator().manual_seed(seed)
    rows = torch.zeros(0, unknowns, dtype=torch.float64)
    for _ in range(max_rounds):
        rows = torch.cat([rows, sample_equations(source, mono, unknowns + margin, init, gen)])
        # one SVD per round gives the rank and, in the last round, the null space: vh is unknowns x unknowns
        # (U is never formed beyond min(m, unknowns) columns: full_matrices only when rows are fewer)
        _, sv, vh = torch.linalg.svd(rows, full_matrices=rows.shape[0] < unknowns)
        rank = rank_from_singular_values(sv, rtol).rank
        if rows.shape[0] - rank >= margin or rank == unknowns:
            break
    null = vh[rank:].numpy()
    gap = float(sv[rank - 1] / sv[rank]) if 0 < rank < sv.numel() else None
    echelon = sparsify(reduced_row_echelon(null)) if null.shape[0] else np.zeros((0, unknowns))
    mono_list = [tuple(int(i) for i in m if i < D) for m in mono.tolist()]
    order = sorted(range(len(echelon)), key=lambda k: max(len(mono_list[j]) for j in np.flatnonzero(
        np.abs(echelon[k]) > 1e-10)))
    thetas = [space.sample(init, torch.Generator().manual_seed(seed + 1 + k)) for k in range(2)]
    coefficients: list = []
    laws: list = []
    grads = [torch.zeros(0, D, dtype=torch.float64) for _ in thetas]
    for k in order:
        row = echelon[k]
        coef = {mono_list[j]: snap(float(row[j])) for j in np.flatnonzero(np.abs(row) > 1e-10)}
        law = polynomial_law(space, coef, len(laws))
        # keep a law only if it is functionally independent of those kept (Def. 2.10)
        new = [torch.cat([g, law.grad(t).unsqueeze(0)]) for g, t in zip(grads, thetas, strict=True)]
        if all(numerical_rank(n, rtol).rank == n.shape[0] for n in new):
            grads = new
            laws.append(law)
            coefficients.append(coef)
    lie, notes = None, []
    if certify and certify_at is not None:
        lie = lie_trace_dimension(source, space.check_theta(certify_at), seed=seed)
    elif certify:
        # the Lie count at three random points, the median reported: a badly conditioned point (a
        # normalized unit with tiny variance, a rarely active ReLU) can move one count either way
        points = [thetas[0]] + [space.sample(init, torch.Generator().manual_seed(seed + 11 + k)) for k in range(2)]
        runs = sorted(((lie_trace_dimension(source, t, seed=seed), t) for t in points), key=lambda r: r[0].num_laws)
        lie, median_point = runs[1]
        counts = [r.num_laws for r, _ in runs]
        if len(set(counts)) > 1:
            notes.append(f"D - dim Lie differs between random points: {counts}; the median is used")
    check = None
    if lie is not None:
        # the check of the engine's brackets at the point they were drawn at
        point = space.check_theta(certify_at) if certify_at is not None else median_point
        check = checked_derivatives(source, point, lie, seed, notes)
    if len(echelon) > len(laws):
        notes.append(f"the polynomial laws of degree <= {degree} span a space of dimension {len(echelon)}; "
                     f"{len(laws)} of them are functionally independent (the others are products and "
                     "combinations of these)")
    return Discovery(D=D, degree=degree, homogeneous=homogeneous, laws=LawSet(space, laws),
                     coefficients=coefficients, lie=lie, rank_at_theta=len(laws), equations=rows.shape[0],
                     unknowns=unknowns, null_gap=gap, seconds=time.perf_counter() - start, seed=seed,
                     notes=notes, basis_size=len(echelon), derivative_check=check)


def polynomial_law(space, coef: dict[tuple[int, ...], float | Fraction], index: int) -> Law:
    """A Law from {monomial (coordinate tuple): coefficient}; quadratic ones get closed-form gradients."""
    formula = compact_formula(space, coef)
    latex = latex_formula(space, coef)
    params = tuple(sorted({space.coordinate_name(i).split("[")[0] for m in coef for i in m},
                          key=space.names.index))
    if all(len(m) <= 2 for m in coef):
        return QuadraticLaw.build(f"law {index}", formula, params,
                                  quad=[(m[0], m[1], float(c)) for m, c in coef.items() if len(m) == 2],
                                  lin=[(m[0], float(c)) for m, c in coef.items() if len(m) == 1],
                                  origin="discovered", latex=latex, family="discovered")
    terms = [(torch.tensor(m, dtype=torch.long), float(c)) for m, c in coef.items()]

    def value(theta: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), dtype=theta.dtype)
        for m, c in terms:  # in order, as sum() would
            total = total + c * theta[m].prod()
        return total

    return Law(name=f"law {index}", formula=formula, params=params, value_fn=value, origin="discovered",
               latex=latex, family="discovered")

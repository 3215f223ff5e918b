"""Readable formulas for polynomial laws, in parameter names.

``compact_formula`` groups the terms of a polynomial {monomial: coefficient}
into norms and inner products of parameter slices where it can:

    |W2[:,3]|^2 - |W1[3,:]|^2 - b1[3]^2
    <Q[0,:], Q[1,:]> - <K[0,:], K[1,:]>
    sum(W[:,2])

and lists the remaining terms one by one. ``latex_formula`` gives the
expanded polynomial in LaTeX (sympy).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from fractions import Fraction

import sympy as sp

from ..params import ParamSpace

Coef = float | Fraction


def _multi_index(space: ParamSpace, i: int) -> tuple[str, tuple[int, ...]]:
    for name in space.names:
        sl = space.slice(name)
        if sl.start <= i < sl.stop:
            rest, idx = i - sl.start, []
            for s in reversed(space.shapes[name]):
                idx.append(rest % s)
                rest //= s
            return name, tuple(reversed(idx))
    raise IndexError(i)


def _slice_text(name: str, fixed: dict[int, int], ndim: int) -> str:
    if ndim == 0:
        return name
    if not fixed:
        return name
    return f"{name}[{','.join(str(fixed[d]) if d in fixed else ':' for d in range(ndim))}]"


def _boxes(shape: tuple[int, ...], indices: set[tuple[int, ...]]) -> list[tuple[dict[int, int], set]]:
    """Cover ``indices`` by slices (some dims free, others fixed), the most free dims first."""
    ndim = len(shape)
    for n_free in range(ndim, -1, -1):
        for free in itertools.combinations(range(ndim), n_free):
            groups: dict[tuple, set] = defaultdict(set)
            for idx in indices:
                groups[tuple(idx[d] for d in range(ndim) if d not in free)].add(idx)
            size = 1
            for d in free:
                size *= shape[d]
            if all(len(g) == size for g in groups.values()):
                fixed_dims = [d for d in range(ndim) if d not in free]
                return [({d: key[k] for k, d in enumerate(fixed_dims)}, g) for key, g in sorted(groups.items())]
    return []


def compact_formula(space: ParamSpace, coef: dict[tuple[int, ...], Coef]) -> str:
    """Group squares into |slice|^2, products into <slice, slice>, linear terms into sum(slice)."""
    pieces: list[tuple[Coef, str]] = []
    by_kind: dict[tuple, set] = defaultdict(set)
    leftovers = []
    for mono, c in coef.items():
        if len(mono) == 1:
            name, idx = _multi_index(space, mono[0])
            by_kind[("lin", c, name)].add(idx)
        elif len(mono) == 2 and mono[0] == mono[1]:
            name, idx = _multi_index(space, mono[0])
            by_kind[("sq", c, name)].add(idx)
        elif len(mono) == 2:
            (na, ia), (nb, ib) = _multi_index(space, mono[0]), _multi_index(space, mono[1])
            by_kind[("cross", c, na, nb)].add((ia, ib))
        else:
            leftovers.append((mono, c))
    for key, items in by_kind.items():
        kind, c = key[0], key[1]
        if kind in ("lin", "sq"):
            name = key[2]
            shape = space.shapes[name]
            for fixed, group in _boxes(shape, items):
                text = _slice_text(name, fixed, len(shape))
                single = len(group) == 1
                pieces.append((c, (text if single else f"sum({text})") if kind == "lin"
                               else (f"{text}^2" if single else f"|{text}|^2")))
        else:
            pieces += _cross_pieces(space, c, key[2], key[3], items)
    for mono, c in leftovers:
        pieces.append((c, "*".join(space.coordinate_name(i) for i in mono)))
    text = ""
    for k, (c, body) in enumerate(pieces):
        value = float(c)
        mag = abs(c) if isinstance(c, Fraction) else abs(value)
        mag_text = "" if mag == 1 else (f"{mag}*" if isinstance(mag, Fraction) else f"{mag:.6g}*")
        sign = "-" if value < 0 else "+"
        text += (f"-{mag_text}{body}" if sign == "-" else f"{mag_text}{body}") if k == 0 \
            else f" {sign} {mag_text}{body}"
    return text or "0"


def _cross_pieces(space, c, na, nb, pairs) -> list[tuple[Coef, str]]:
    """Products theta_a theta_b grouped into inner products <A slice, B slice> where complete."""
    if na != nb:
        return [(c, f"{space.coordinate_name(space.index(na, *ia))}*{space.coordinate_name(space.index(nb, *ib))}")
                for ia, ib in sorted(pairs)]
    shape = space.shapes[na]
    ndim = len(shape)
    for n_free in range(ndim, 0, -1):
        for free in itertools.combinations(range(ndim), n_free):
            groups: dict[tuple, set] = defaultdict(set)
            ok = True
            for ia, ib in pairs:
                if any(ia[d] != ib[d] for d in free):
                    ok = False
                    break
                fixed = [d for d in range(ndim) if d not in free]
                key = (tuple(ia[d] for d in fixed), tuple(ib[d] for d in fixed))
                groups[key].add(ia)
            size = 1
            for d in free:
                size *= shape[d]
            if ok and all(len(g) == size for g in groups.values()):
                fixed_dims = [d for d in range(ndim) if d not in free]
                out = []
                for (ka, kb), _ in sorted(groups.items()):
                    sa = _slice_text(na, dict(zip(fixed_dims, ka, strict=True)), ndim)
                    sb = _slice_text(na, dict(zip(fixed_dims, kb, strict=True)), ndim)
                    out.append((c, f"<{sa}, {sb}>"))
                return out
    return [(c, f"{space.coordinate_name(space.index(na, *ia))}*{space.coordinate_name(space.index(na, *ib))}")
            for ia, ib in sorted(pairs)]


def latex_formula(space: ParamSpace, coef: dict[tuple[int, ...], Coef]) -> str:
    """The expanded polynomial in LaTeX, with symbols like W1_{3,2}."""
    symbols: dict[int, sp.Symbol] = {}

    def sym(i: int) -> sp.Symbol:
        if i not in symbols:
            name, idx = _multi_index(space, i)
            symbols[i] = sp.Symbol(f"{name.replace('.', '_')}_{{{','.join(map(str, idx))}}}" if idx else name)
        return symbols[i]

    expr = sum((sp.Rational(c.numerator, c.denominator) if isinstance(c, Fraction) else sp.Float(c, 8))
               * sp.Mul(*[sym(i) for i in mono]) for mono, c in coef.items())
    return sp.latex(expr) if coef else "0"

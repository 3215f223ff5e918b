"""Matrix laws L L^T - R R^T held as one block: the entries share two index matrices, not c^2 copies.

Every entry (a, b), a <= b, of L L^T - R R^T is a conservation law when the rows
of L and R move as L -> A L, R -> A^{-T} R (Prop 3.5, Cor 3.9, 3.10: one attention
head's Q Q^T - K K^T and V V^T - O^T O, eq. 18/19). Written entry by entry, a head
of width c with rows of n coordinates costs c(c+1)/2 laws of ~2n terms each: a
GPT-2 layer (12 heads of 64, n = 769) holds 50 000 laws of 1 536 terms. A
:class:`GramBlock` stores the two (c, n) index matrices once; its entries
(:class:`GramEntryLaw`) are :class:`~conslaw.laws.QuadraticLaw` objects whose terms,
formula and gradient are computed when read, and the verifier and the rank treat a
block as a whole (all c(c+1)/2 entries against a field by two c x c matrix
products; the rank by an SVD of the c x n matrix G = [L, -R], :mod:`.gram_rank`).

For entries of a block with G = [L, -R] (rows L_a, R_a of theta's coordinates):

    h_ab = <L_a, L_b> - <R_a, R_b>,    grad h_ab = (E_ab + E_ba) G  (a != b),  2 E_aa G (a = b),

so <grad h_ab, chi> = (chi_L L^T + L chi_L^T - chi_R R^T - R chi_R^T)_ab. A block is
built only when every row has the same number of coordinates and no coordinate appears twice (then the entries' supports
are the union of four disjoint rows and the norms above are sums of row norms);
otherwise :func:`gram_matrix_laws` writes explicit entries (:func:`~conslaw.laws.gram_law`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch

from ..params import DTYPE
from .builders import gram_law
from .law import QuadraticLaw
from .slots import Slot


@dataclass(eq=False)
class GramBlock:
    """The index matrices of L L^T - R R^T: ``left`` (c, nL) and ``right`` (c, nR) flat coordinates of theta.

    ``left_texts[i]`` / ``right_texts[i]`` are the slot texts of row i (for formulas); ``labels[i]`` the unit
    label of row i (the feature index shown in names); ``params`` the parameters the block touches.
    """

    left: torch.Tensor
    right: torch.Tensor
    labels: tuple[int, ...]
    params: tuple[str, ...]
    left_texts: list[tuple[str, ...]] = field(repr=False)
    right_texts: list[tuple[str, ...]] = field(repr=False)

    @property
    def size(self) -> int:
        """c, the number of rows."""
        return self.left.shape[0]

    def coordinates(self) -> torch.Tensor:
        """Every coordinate of the block, (c, nL + nR): row i is [L_i, R_i] (the layout of G)."""
        return torch.cat([self.left, self.right], dim=1)

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        """G = [L, -R] at theta, (c, nL + nR): the gradient of entry (a, b) is (E_ab + E_ba) G."""
        return torch.cat([theta[self.left], -theta[self.right]], dim=1)

    def value(self, i: int, j: int, theta: torch.Tensor) -> torch.Tensor:
        """h_ij(theta) = <L_i, L_j> - <R_i, R_j>."""
        return theta[self.left[i]] @ theta[self.left[j]] - theta[self.right[i]] @ theta[self.right[j]]

    def sparse_grad(self, i: int, j: int, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(support, gradient on it) of entry (i, j): rows i and j of L and R (disjoint coordinates)."""
        if i == j:
            return (torch.cat([self.left[i], self.right[i]]),
                    torch.cat([2.0 * theta[self.left[i]], -2.0 * theta[self.right[i]]]))
        return (torch.cat([self.left[i], self.left[j], self.right[i], self.right[j]]),
                torch.cat([theta[self.left[j]], theta[self.left[i]], -theta[self.right[j]], -theta[self.right[i]]]))

    def grad(self, i: int, j: int, theta: torch.Tensor) -> torch.Tensor:
        """The dense gradient of entry (i, j)."""
        support, g = self.sparse_grad(i, j, theta)
        return torch.zeros_like(theta).index_put_((support,), g)

    def quad(self, i: int, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The terms (first indices, second indices, coefficients) of entry (i, j)."""
        first = torch.cat([self.left[i], self.right[i]])
        second = torch.cat([self.left[j], self.right[j]])
        coef = torch.cat([torch.ones(self.left.shape[1], dtype=DTYPE), -torch.ones(self.right.shape[1], dtype=DTYPE)])
        return first, second, coef

    def formula(self, i: int, j: int) -> str:
        """The entry's formula in slot texts, as :func:`~conslaw.laws.gram_law` writes it."""
        def inner(xs, ys):
            return " + ".join(f"<{x}, {y}>" if x != y else f"|{x}|^2" for x, y in zip(xs, ys, strict=True))
        right = inner(self.right_texts[i], self.right_texts[j])
        return f"{inner(self.left_texts[i], self.left_texts[j])} - " + (
            f"({right})" if len(self.right_texts[i]) > 1 else right)

    def products(self, theta: torch.Tensor, fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For fields chi (n, D): <grad h_ab, chi> (n, c, c), |grad h_ab|^2 (c, c) and |chi on supp h_ab|^2 (n, c, c).

        <grad h_ab, chi> = (chi_L L^T + L chi_L^T - chi_R R^T - R chi_R^T)_ab; the squared norms are sums of the
        squared norms of the rows a and b of L and R (4 times the diagonal's for the gradient at a = b).
        """
        L, R = theta[self.left], theta[self.right]
        chi_l, chi_r = fields[:, self.left], fields[:, self.right]
        m = chi_l @ L.T - chi_r @ R.T
        dot = m + m.transpose(1, 2)
        rows = L.square().sum(1) + R.square().sum(1)
        grad2 = rows[:, None] + rows[None, :]
        grad2.diagonal().mul_(2.0)  # 4 (|L_a|^2 + |R_a|^2) on the diagonal
        share = chi_l.square().sum(2) + chi_r.square().sum(2)
        share2 = share[:, :, None] + share[:, None, :]
        share2.diagonal(dim1=1, dim2=2).mul_(0.5)
        return dot, grad2, share2


class GramEntryLaw(QuadraticLaw):
    """Entry (i, j) of a :class:`GramBlock`: a :class:`~conslaw.laws.QuadraticLaw` whose terms, formula, value
    and gradient are computed from the block when read (nothing per entry is stored but its name and position).
    """

    block: GramBlock
    pair: tuple[int, int]

    def __init__(self, block: GramBlock, i: int, j: int, name: str, structure: dict) -> None:
        # the dataclass fields that are not properties here (formula, value_fn, grad_fn, quad and lin are)
        values = {"name": name, "params": block.params, "origin": "closed-form", "latex": "", "family": None,
                  "module": None, "unit": (block.labels[i], block.labels[j]), "head": None, "matrix": None,
                  "approximate_cause": None, "norm_terms": ()}
        unknown = set(structure) - set(values)
        if unknown:
            raise TypeError(f"GramEntryLaw: unknown structure fields {sorted(unknown)}")
        values.update(structure)
        for key, value in values.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "block", block)
        object.__setattr__(self, "pair", (i, j))

    @property
    def formula(self) -> str:
        """The entry's formula (made when read)."""
        return self.block.formula(*self.pair)

    @property
    def value_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """theta -> h_ij(theta)."""
        return partial(self.block.value, *self.pair)

    @property
    def grad_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """theta -> the dense gradient of h_ij."""
        return partial(self.block.grad, *self.pair)

    @property
    def quad(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(first indices, second indices, coefficients) of the entry's terms."""
        return self.block.quad(*self.pair)

    @property
    def lin(self) -> tuple[torch.Tensor, torch.Tensor]:
        """No linear terms."""
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=DTYPE)

    def sparse_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(support, gradient on it), from the block's rows."""
        return self.block.sparse_grad(*self.pair, theta)


def _row_index(slots: Sequence[Slot]) -> torch.Tensor:
    return torch.cat([s.index.reshape(-1) for s in slots]) if slots else torch.zeros(0, dtype=torch.long)


def gram_matrix_laws(name: Callable[[int, int], str], left: Sequence[Sequence[Slot]],
                     right: Sequence[Sequence[Slot]], labels: Sequence[int], **structure) -> list[QuadraticLaw]:
    """Every entry a <= b of L L^T - R R^T, row i of L being the slots ``left[i]`` (R: ``right[i]``).

    One :class:`GramBlock` when the rows are rectangular (the same slot sizes on every row) and no coordinate
    repeats; explicit :func:`~conslaw.laws.gram_law` entries otherwise.

    Args:
        name: (labels[i], labels[j]) -> the entry's display name.
        left: per row, its slots in L (a weight row, then its bias entry...).
        right: per row, its slots in R, paired position by position across rows.
        labels: the unit label of each row (the ``unit`` of an entry is (labels[i], labels[j])).
        **structure: declared fields of :class:`~conslaw.laws.Law` (family, module, head, matrix).
    """
    c = len(labels)
    if len(left) != c or len(right) != c:
        raise ValueError(f"gram_matrix_laws: {len(left)} left rows and {len(right)} right rows for {c} labels")
    shapes = {(tuple(s.index.numel() for s in left[i]), tuple(s.index.numel() for s in right[i])) for i in range(c)}
    if len(shapes) == 1 and c:
        L = torch.stack([_row_index(left[i]) for i in range(c)])
        R = torch.stack([_row_index(right[i]) for i in range(c)])
        every = torch.cat([L.reshape(-1), R.reshape(-1)])
        if torch.unique(every).numel() == every.numel():
            params = tuple(dict.fromkeys(s.name for rows in (left, right) for row in rows for s in row))
            block = GramBlock(L, R, tuple(labels), params, [tuple(s.text for s in row) for row in left],
                              [tuple(s.text for s in row) for row in right])
            return [GramEntryLaw(block, i, j, name(labels[i], labels[j]), structure)
                    for i in range(c) for j in range(i, c)]
    return [gram_law(name(labels[i], labels[j]), list(left[i]), list(left[j]), list(right[i]), list(right[j]),
                     unit=(labels[i], labels[j]), **structure) for i in range(c) for j in range(i, c)]

"""Law builders from slots: the shapes every closed-form law of the paper takes.

- :func:`balance_law`: sum |plus|^2 - sum |minus|^2 (rescaling, Prop 3.5, Thm 3.6, eq. 17);
- :func:`gram_law`: sum <a, b> - sum <c, d> (one entry of A A^T - B B^T, Prop 3.5, Cor 3.9);
- :func:`linear_law`: the sum of the entries of some slots (translation, Prop 3.11);
- :func:`coordinate_law`: one coordinate theta_i whose gradient is always 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..params import DTYPE, ParamSpace
from .law import QuadraticLaw
from .slots import Slot


def _params(slots: list[Slot]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s.name for s in slots))


def balance_law(name: str, plus: list[Slot], minus: list[Slot], **structure) -> QuadraticLaw:
    """sum |plus|^2 - sum |minus|^2 (a rescaling law), with its signed slots declared as ``norm_terms``.

    Args:
        name: display name.
        plus: slots whose squared norms are added (outgoing side).
        minus: slots whose squared norms are subtracted (incoming side).
        **structure: declared fields of :class:`~conslaw.laws.Law` (family, module, unit, ...).
    """
    def square(s: Slot) -> str:
        return f"{s.text}^2" if s.index.numel() == 1 else f"|{s.text}|^2"

    formula = " + ".join(square(s) for s in plus) + "".join(f" - {square(s)}" for s in minus)
    terms = tuple((1.0, s) for s in plus) + tuple((-1.0, s) for s in minus)
    return QuadraticLaw.inner_difference(name, formula, _params(plus + minus), plus=[(s.index, s.index) for s in plus],
                                         minus=[(s.index, s.index) for s in minus], norm_terms=terms,
                                         **structure)


def gram_law(name: str, left_a: list[Slot], left_b: list[Slot], right_a: list[Slot], right_b: list[Slot],
             **structure) -> QuadraticLaw:
    """sum <left_a, left_b> - sum <right_a, right_b>: one entry of A A^T - B B^T.

    Args:
        name: display name.
        left_a: slots of row a of A (biases appended as extra slots).
        left_b: slots of row b of A, paired with ``left_a``.
        right_a: slots of row a of B.
        right_b: slots of row b of B, paired with ``right_a``.
        **structure: declared fields of :class:`~conslaw.laws.Law`.
    """
    def inner(xs, ys):
        return " + ".join(f"<{x.text}, {y.text}>" if x.text != y.text else f"|{x.text}|^2"
                          for x, y in zip(xs, ys, strict=True))
    right = inner(right_a, right_b)
    formula = f"{inner(left_a, left_b)} - " + (f"({right})" if len(right_a) > 1 else right)
    return QuadraticLaw.inner_difference(
        name, formula, _params(left_a + left_b + right_a + right_b),
        plus=[(x.index, y.index) for x, y in zip(left_a, left_b, strict=True)],
        minus=[(x.index, y.index) for x, y in zip(right_a, right_b, strict=True)], **structure)


def linear_law(name: str, slots: Sequence[Slot], minus: Sequence[Slot] = (), **structure) -> QuadraticLaw:
    """The sum of the entries of ``slots`` minus the sum of those of ``minus`` (a translation law).

    Args:
        name: display name.
        slots: the slots added.
        minus: the slots subtracted.
        **structure: declared fields of :class:`~conslaw.laws.Law`.
    """
    slots, minus = list(slots), list(minus)
    formula = " + ".join(f"sum({s.text})" for s in slots) + "".join(f" - sum({s.text})" for s in minus)
    index = torch.cat([s.index for s in slots + minus])
    signs = torch.cat([torch.full((s.index.numel(),), 1 if k < len(slots) else -1, dtype=torch.int8)
                       for k, s in enumerate(slots + minus)])
    empty = torch.zeros(0, dtype=torch.long)
    index, order = torch.sort(index)  # sorted: the index tensor is the law's support (no cache at verification)
    return QuadraticLaw.from_tensors(name, formula, _params(slots + minus), empty, empty, torch.zeros(0, dtype=DTYPE),
                                     index, signs[order], **structure)


def coordinate_law(space: ParamSpace, name: str, k: int, why: str = "", **structure) -> QuadraticLaw:
    """theta_i itself for entry k of parameter ``name`` (conserved when the loss does not depend on it).

    Args:
        space: the parameter space.
        name: the parameter.
        k: the flat position inside the parameter.
        why: the reason its gradient vanishes (shown in the name).
        **structure: declared fields of :class:`~conslaw.laws.Law`.
    """
    i = int(space.indices(name).reshape(-1)[k])
    coord = space.coordinate_name(i)
    structure.setdefault("unit", (k,))
    label = f"{coord} (zero gradient: {why})" if why else f"{coord} (zero gradient)"
    return QuadraticLaw.build(label, coord, (name,), lin=[(i, 1.0)], **structure)

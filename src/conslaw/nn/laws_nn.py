"""Laws of real modules: the law entries find_laws reports, and how to build them.

A :class:`ModuleLaw` is a :class:`~conslaw.laws.Law` over the flat parameters of
the whole model (``ParamSpace.from_module``) with the family that produced it,
the module it belongs to, and, after verification, its status:

- ``exact``: residual at round-off (verified);
- ``approximate``: small residual with a known cause (e.g. the eps of a
  normalization layer breaks its scale invariance by O(eps / variance));
- ``failed``: the pattern matched but the law does not hold on this model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..laws import Law, QuadraticLaw
from ..params import ParamSpace


@dataclass
class ModuleLaw:
    law: Law
    family: str
    module: str
    approximate_cause: str | None = None
    zero_gradient: bool = False
    max_residual: float | None = None
    status: str = "unverified"
    note: str | None = None
    #: (support, gradient on it) at the theta of the verification, reused for the rank
    sparse_grad: tuple | None = field(default=None, repr=False)

    @property
    def verified(self) -> bool:
        return self.status == "exact"

    @property
    def approximate(self) -> bool:
        return self.status == "approximate"

    def as_dict(self) -> dict:
        return {"name": self.law.name, "kind": self.family, "module": self.module, "formula": self.law.formula,
                "params": list(self.law.params), "count": 1, "verified": self.verified,
                "approximate": self.approximate, "status": self.status, "max_residual": self.max_residual,
                "cause": self.approximate_cause if self.approximate else None}


@dataclass
class Slot:
    """Flat indices of one "unit" of a parameter tensor, e.g. row k of a weight: (name, index, text)."""

    name: str
    index: torch.Tensor
    text: str
    axis: int = 0
    units: tuple[int, ...] = ()


def unit_slot(space: ParamSpace, name: str, axis: int, k: int | slice, cols: list[int] | None = None) -> Slot:
    """Entries of parameter ``name`` with index k (or ``cols``) along ``axis``."""
    idx = _indices(space, name)
    if cols is not None:
        sel = idx.index_select(axis, torch.tensor(cols))
        label = f"{cols[0]}:{cols[-1] + 1}" if len(cols) > 1 and cols == list(range(cols[0], cols[-1] + 1)) \
            else ",".join(map(str, cols))
        units = tuple(cols)
    else:
        sel = idx.select(axis, k) if isinstance(k, int) else idx[(slice(None),) * axis + (k,)]
        label = str(k) if isinstance(k, int) else f"{k.start}:{k.stop}"
        units = (k,) if isinstance(k, int) else tuple(range(k.start, k.stop))
    parts = [":"] * idx.dim()
    parts[axis] = label
    text = f"{name}[{','.join(parts)}]" if idx.dim() > 1 else f"{name}[{label}]"
    # a copy: a view would keep the whole index tensor alive
    return Slot(name, sel.reshape(-1).clone(), text, axis, units)


_INDEX_CACHE: dict[tuple[int, str], torch.Tensor] = {}


def _indices(space: ParamSpace, name: str) -> torch.Tensor:
    key = (id(space), name)
    if key not in _INDEX_CACHE or _INDEX_CACHE[key].numel() != space.numel(name):
        if len(_INDEX_CACHE) > 64:
            _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = space.indices(name)
    return _INDEX_CACHE[key]


def balance_law(name: str, plus: list[Slot], minus: list[Slot], family: str, module: str,
                cause: str | None = None) -> ModuleLaw:
    """sum |plus|^2 - sum |minus|^2 (a rescaling law)."""
    formula = " + ".join(f"|{s.text}|^2" for s in plus) + "".join(f" - |{s.text}|^2" for s in minus)
    params = tuple(dict.fromkeys(s.name for s in plus + minus))
    law = QuadraticLaw.inner_difference(name, formula, params, plus=[(s.index, s.index) for s in plus],
                                        minus=[(s.index, s.index) for s in minus])
    # sum_(sign, slot) sign |slot|^2: lets a monitor evaluate it from per-axis norms of the parameters
    law.norm_terms = [(1.0, s) for s in plus] + [(-1.0, s) for s in minus]
    return ModuleLaw(law, family, module, approximate_cause=cause)


def gram_law(name: str, left_a: list[Slot], left_b: list[Slot], right_a: list[Slot], right_b: list[Slot],
             family: str, module: str) -> ModuleLaw:
    """sum <left_a, left_b> - sum <right_a, right_b> (one entry of A A^T - B B^T)."""
    def inner(xs, ys):
        return " + ".join(f"<{x.text}, {y.text}>" if x.text != y.text else f"|{x.text}|^2"
                          for x, y in zip(xs, ys, strict=True))
    formula = f"{inner(left_a, left_b)} - {inner(right_a, right_b)}".replace("- ", "- (", 1) + ")" \
        if len(right_a) > 1 else f"{inner(left_a, left_b)} - {inner(right_a, right_b)}"
    params = tuple(dict.fromkeys(s.name for s in left_a + left_b + right_a + right_b))
    law = QuadraticLaw.inner_difference(
        name, formula, params, plus=[(x.index, y.index) for x, y in zip(left_a, left_b, strict=True)],
        minus=[(x.index, y.index) for x, y in zip(right_a, right_b, strict=True)])
    return ModuleLaw(law, family, module)


def linear_law(name: str, slots: list[Slot], family: str, module: str, cause: str | None = None) -> ModuleLaw:
    """sum of the entries of the slots (a translation law)."""
    formula = " + ".join(f"sum({s.text})" for s in slots)
    index = torch.cat([s.index for s in slots])
    empty = torch.zeros(0, dtype=torch.long)
    law = QuadraticLaw.from_tensors(name, formula, tuple(dict.fromkeys(s.name for s in slots)), empty, empty,
                                    torch.zeros(0, dtype=torch.float64), index,
                                    torch.ones(index.numel(), dtype=torch.float64))
    return ModuleLaw(law, family, module, approximate_cause=cause)


def zero_gradient_law(space: ParamSpace, name: str, k: int, module: str, why: str) -> ModuleLaw:
    """theta_i itself, for a coordinate the loss does not depend on (its gradient is 0)."""
    i = int(space.indices(name).reshape(-1)[k])
    coord = space.coordinate_name(i)
    law = QuadraticLaw.build(f"{coord} (zero gradient)", coord, (name,), lin=[(i, 1.0)])
    return ModuleLaw(law, "zero-gradient", module, zero_gradient=True, note=why)


@dataclass
class Findings:
    """What the pattern handlers collect while walking a model."""

    laws: list[ModuleLaw] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

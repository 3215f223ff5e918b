"""The building-block catalog: what every architecture provides.

An :class:`Architecture` bundles, for one building block of the paper, its
parameter space, its reparametrization phi (when the paper gives one with
W_theta = range dphi(theta)^T), its model g(theta, x), its closed-form laws and
the count the paper's theorem predicts (with the theorem named).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import ConslawError
from ..fields import FieldSource, ModelFields, ReparamFields, SignFields, gaussian_inputs
from ..laws import Law, LawSet, gram_law, unit_slot
from ..params import DTYPE, ParamSpace

Params = dict[str, torch.Tensor]


@dataclass
class Architecture:
    """One catalog entry, ready for the Lie engine."""

    name: str
    label: str
    config: dict
    space: ParamSpace
    model: Callable[[Params, torch.Tensor], torch.Tensor] | None
    input_shape: tuple[int, ...] | None
    #: the closed-form laws, or a function building them on first use (a wide block has r(r+1)/2 of them:
    #: building them eagerly would cost minutes before a size guard could refuse the block)
    laws: list[Law] | Callable[[], list[Law]]
    phi: Callable[[Params], torch.Tensor] | None = None
    #: optional fast <phi(theta), a(c)> with structured random coefficients c (see ReparamFields)
    pairing: tuple[Callable, Callable] | None = None
    sign_laws: list[Law] | None = None
    expected: int | None = None
    expected_source: str = ""
    notes: list[str] = field(default_factory=list)
    #: sample inputs at scales e^u, u ~ U(-3, 3), to reach every linear region of a
    #: piecewise-linear model (biases put region boundaries away from the origin)
    multiscale_inputs: bool = False

    def __repr__(self) -> str:
        return f"Architecture({self.label}: D={self.space.D})"

    def sample_input(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Random inputs x for the model fields (Gaussian, or a Gaussian scale mixture)."""
        return gaussian_inputs(n, self.input_shape, generator, multiscale=self.multiscale_inputs)

    def default_fields(self) -> str:
        """``reparam`` where the catalog has phi, else ``model``."""
        return "reparam" if self.phi is not None else "model"

    def fields(self, kind: str | None = None, flow: str = "gradient", dense_phi: bool = False) -> FieldSource:
        """The field source ``kind`` (``reparam`` or ``model``) for ``flow`` (``gradient``/``sign``).

        ``dense_phi`` forces Gaussian coefficients a in R^d even where the block
        has a structured fast pairing (a cross-check of that pairing).
        """
        kind = kind or self.default_fields()
        if kind == "reparam":
            if self.phi is None:
                raise ConslawError(f"{self.label} has no reparametrization phi in the catalog",
                                   "use --fields model")
            if self.pairing is not None and not dense_phi and flow == "gradient":
                source: FieldSource = ReparamFields(self.space, self.phi, *self.pairing)
            else:
                source = ReparamFields(self.space, self.phi)
        elif kind == "model":
            if self.model is None:
                raise ConslawError(f"{self.label} has no model g in the catalog", "use --fields reparam")
            source = ModelFields(self.space, self.model, self.sample_input,
                                 inputs_per_sample=4 if flow == "sign" else 1)
            if self.multiscale_inputs:
                source.oversample = 3.0
        else:
            raise ConslawError(f"unknown field source {kind!r}", "use 'reparam' or 'model'")
        if flow == "sign":
            return SignFields(source)
        if flow != "gradient":
            raise ConslawError(f"unknown flow {flow!r}", "use 'gradient' or 'sign'")
        return source

    def closed_forms(self) -> list[Law]:
        """The closed-form laws of gradient flow, built on first use and kept."""
        if callable(self.laws):
            self.laws = list(self.laws())
        return self.laws

    def law_set(self, flow: str = "gradient") -> LawSet | None:
        """The catalog's closed-form laws for ``flow``; None where the catalog has none."""
        if flow == "sign":
            return None if self.sign_laws is None else LawSet(self.space, self.sign_laws)
        return LawSet(self.space, self.closed_forms())

    def residual(self) -> Architecture:
        """The residual block x -> x + g(theta, x) (eq. 14): same phi, same laws (Prop 3.2)."""
        if self.model is None:
            raise ConslawError(f"{self.label} has no model to wrap", "use an architecture with a model")
        x0 = torch.zeros(self.input_shape, dtype=DTYPE)
        out_shape = tuple(self.model(self.space.unflatten(torch.zeros(self.space.D, dtype=DTYPE)), x0).shape)
        if out_shape != tuple(self.input_shape):
            raise ConslawError(f"a skip connection needs output shape = input shape, got input "
                               f"{tuple(self.input_shape)} and output {out_shape}",
                               "make the last width equal to the first (e.g. relu 3 5 3)")
        inner = self.model
        return Architecture(
            name=self.name, label=f"residual {self.label}", config={**self.config, "residual": True},
            space=self.space, model=lambda p, x: x + inner(p, x), input_shape=self.input_shape,
            laws=self.laws, phi=self.phi, pairing=self.pairing, sign_laws=self.sign_laws, expected=self.expected,
            expected_source=f"{self.expected_source} + Prop 3.2" if self.expected_source else "Prop 3.2",
            notes=self.notes, multiscale_inputs=self.multiscale_inputs)


def positive_int(value, what: str, minimum: int = 1) -> int:
    """``value`` as an int >= minimum, or an error naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ConslawError(f"{what} must be an integer, got {value!r}", f"pass an integer >= {minimum}")
    if value < minimum:
        raise ConslawError(f"{what} must be >= {minimum}, got {value}", f"pass an integer >= {minimum}")
    return int(value)


def gram_difference_laws(space: ParamSpace, left: str, right: str, label: str,
                         rows_left: bool, rows_right: bool, offset: int = 0, size: int | None = None,
                         **structure) -> list[Law]:
    """Entries (a <= b) of A A^T - B B^T, where A's "units" are rows or columns (Prop 3.5, Cor 3.9).

    Unit k of parameter ``left`` / ``right`` is its row k (``rows_*=True``) or
    its column k; units ``offset .. offset+size-1`` are used (one attention
    head, for instance). Entry (a, b) is <A_a, A_b> - <B_a, B_b>.

    Args:
        space: the parameter space.
        left: the parameter A.
        right: the parameter B.
        label: the matrix's name, e.g. ``Q Q^T - K K^T`` (declared as the laws' ``matrix``).
        rows_left: A's units are rows (True) or columns (False).
        rows_right: B's units are rows (True) or columns (False).
        offset: the first unit.
        size: the number of units (all when None).
        **structure: further declared fields (family, module, head).
    """
    size = space.shapes[left][0 if rows_left else 1] if size is None else size

    def unit(name: str, rows: bool, k: int):
        return unit_slot(space, name, 0 if rows else 1, k)

    structure.setdefault("family", "catalog")
    return [gram_law(f"{label}[{a},{b}]", [unit(left, rows_left, a)], [unit(left, rows_left, b)],
                     [unit(right, rows_right, a)], [unit(right, rows_right, b)], matrix=label, unit=(a, b),
                     **structure)
            for a in range(offset, offset + size) for b in range(a, offset + size)]

"""Conservation laws as declared objects (:class:`Law`), their sets, builders, formulas and the one verifier."""

from .builders import balance_law, coordinate_law, gram_law, linear_law
from .formula import compact_formula, latex_formula
from .law import Law, QuadraticLaw, sum_of_laws
from .lawset import LawSet
from .slots import Slot, unit_slot
from .verify import EXACT, law_residual, residuals

__all__ = ["EXACT", "Law", "LawSet", "QuadraticLaw", "Slot", "balance_law", "compact_formula", "coordinate_law",
           "gram_law", "latex_formula", "law_residual", "linear_law", "residuals", "sum_of_laws",
           "unit_slot"]

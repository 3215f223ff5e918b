"""conslaw: conservation laws of neural-network training.

Count them (``D - dim Lie(W)(theta)``, Thm 2.11 of Marcotte, Gribonval, Peyre,
ICML 2025), name them, and verify them.

>>> import conslaw
>>> conslaw.count(conslaw.catalog.linear(3, 4, 2)).num_laws   # r(r+1)/2 with r = 4
10
"""

from . import catalog
from .count import CountResult, count
from .errors import ConslawError
from .fields import FieldSource, ModelFields, ReparamFields, SignFields
from .laws import Law, LawSet, QuadraticLaw
from .lie import LieResult, bracket_value, lie_trace_dimension
from .params import ParamSpace
from .rank import RankResult, numerical_rank

__all__ = [
    "ConslawError", "CountResult", "FieldSource", "Law", "LawSet", "LieResult", "ModelFields",
    "ParamSpace", "QuadraticLaw", "RankResult", "ReparamFields", "SignFields", "bracket_value",
    "catalog", "count", "lie_trace_dimension", "numerical_rank",
]

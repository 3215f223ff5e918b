"""conslaw: conservation laws of neural-network training.

Count them (``D - dim Lie(W)(theta)``, Thm 2.11 of Marcotte, Gribonval, Peyre,
ICML 2025), name them, verify them, monitor them during training.

>>> import conslaw
>>> conslaw.count(conslaw.catalog.linear(3, 4, 2)).num_laws   # r(r+1)/2 with r = 4
10

The public surface is this module: everything in ``__all__``. Submodules hold
the implementation; names starting with ``_`` are internal.
"""

from . import catalog
from .count import CountResult, count
from .discover import Discovery, discover
from .errors import ConslawError
from .fields import (
    FieldSource,
    LossGradFields,
    ModelFields,
    ReparamFields,
    RestrictedFields,
    SignFields,
    restrict,
)
from .laws import Law, LawSet, QuadraticLaw, Slot, sum_of_laws, unit_slot
from .lie import LieResult, bracket_value, lie_trace_dimension
from .monitor import LawMonitor
from .nn import CheckedLaw, Handler, HandlerRegistry, ModelLaws, find_laws, register_handler
from .nn.discover import discover_model
from .params import ParamSpace
from .rank import RankResult, numerical_rank
from .rebalance import RebalanceResult, rebalance

__all__ = [
    "CheckedLaw", "ConslawError", "CountResult", "Discovery", "FieldSource", "Handler", "HandlerRegistry", "Law",
    "LawMonitor", "LawSet", "LieResult", "LossGradFields", "ModelFields", "ModelLaws", "ParamSpace", "QuadraticLaw",
    "RankResult", "RebalanceResult", "ReparamFields", "RestrictedFields", "SignFields", "Slot", "bracket_value",
    "catalog", "count", "discover", "discover_model", "find_laws", "lie_trace_dimension", "numerical_rank",
    "rebalance", "register_handler", "restrict", "sum_of_laws", "unit_slot",
]

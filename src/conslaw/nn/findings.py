"""What the law families collect while walking a model: laws, warnings and notes."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..laws import Law


@dataclass
class Findings:
    """Laws found by the families and handlers, with the warnings and notes they raise."""

    laws: list[Law] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

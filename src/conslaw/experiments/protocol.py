"""What every experiment shares: the claim rows and their pass thresholds, the exponent fit, the run cache.

A claim is a row {claim, paper, measured, pass}. The exponent claims of the
paper's SGD figures (Prop 5.1, Fig 1, Fig 5) say: the final relative error of a
conserved function grows like lr^2, that of a non-conserved control like lr.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..flows import fit_exponent

#: a fitted exponent passes when within this distance of the paper's (2 for a law, 1 for a control)
EXPONENT_TOLERANCE = 0.3

__all__ = ["EXPONENT_TOLERANCE", "cached_run", "claim", "exponent_claims", "fit_exponent"]


def claim(text: str, paper: str, measured: str, passed: bool) -> dict:
    """One row of a claims table."""
    return {"claim": text, "paper": paper, "measured": measured, "pass": bool(passed)}


def exponent_claims(law_claim: str, control_claim: str, p_law: float, p_control: float) -> list[dict]:
    """The two exponent claims: law error ~ lr^2, control ~ lr (each within :data:`EXPONENT_TOLERANCE`)."""
    return [claim(law_claim, "exponent 2", f"{p_law:.2f}", abs(p_law - 2.0) <= EXPONENT_TOLERANCE),
            claim(control_claim, "exponent 1", f"{p_control:.2f}", abs(p_control - 1.0) <= EXPONENT_TOLERANCE)]


def cached_run(path: Path, compute: Callable[[], dict]) -> dict:
    """The record saved at ``path`` by an earlier run, or ``compute()`` written there at once (resume)."""
    if path.exists():
        return json.loads(path.read_text())
    record = compute()
    path.write_text(json.dumps(record))
    return record

"""The main job: every claim of :mod:`conslaw.claims` counted, and built-in models named vs counted.

Catalog rows compare the engine's count and the catalog's closed forms with the
paper's numbers; model rows compare the named laws with the engine's count
(``named vs engine``: no paper number exists for them).
"""

from __future__ import annotations

from tqdm.auto import tqdm

from .claims import CLAIMS, MODEL_CHECKS
from .count import count


def run_claims(progress: bool = False) -> list[dict]:
    """One row per paper claim: engine count, closed forms, paper numbers, pass."""
    rows = []
    for claim in tqdm(CLAIMS, desc="tour", disable=not progress, leave=False):
        arch = claim.build()
        result = count(arch, **claim.options)
        rows.append({"label": arch.label, "fields": result.as_dict()["fields"], "flow": result.flow,
                     "D": result.lie.D, "num_laws": result.lie_laws, "known_laws": result.known_laws,
                     "paper": claim.laws, "paper_known": claim.known, "claim": claim.theorem,
                     "pass": result.lie_laws == claim.laws and result.known_laws == claim.known,
                     "seconds": round(result.seconds, 4)})
    return rows


def run_models(progress: bool = False) -> list[dict]:
    """One row per built-in model: named laws vs the engine's count on loss gradients."""
    from .models import BUILTINS
    from .nn import find_laws

    rows = []
    for name in tqdm(MODEL_CHECKS, desc="models", disable=not progress, leave=False):
        b = BUILTINS[name]
        result = find_laws(b.build(seed=0), b.example(), b.loss, name=name)
        rows.append({"label": f"nn: {name}", "D": result.D, "named_laws": result.named_laws,
                     "engine_laws": result.lie_laws, "claim": "named == D - dim Lie (loss gradients)",
                     "pass": result.named_laws == result.lie_laws, "seconds": round(result.seconds, 3)})
    return rows


def run_tour(progress: bool = False) -> dict:
    """Both tables: ``claims`` (paper) and ``models`` (named vs engine)."""
    return {"claims": run_claims(progress), "models": run_models(progress)}

"""The paper's claims and figures, reproduced (``conslaw reproduce``)."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConslawError
from ..io import ensure_dir


def _fig1(quick, data, out):
    from .fig1 import run
    return run(quick=quick, data=data, out=out)


def _fig5(quick, data, out):
    from .fig5 import run
    return run(quick=quick, data=data, out=out)


def _small(name):
    def runner(quick, data, out):
        from . import small
        return getattr(small, name)(quick)
    return runner


EXPERIMENTS: dict[str, Callable] = {
    "thm21": _small("thm21"),
    "prop51": _small("prop51"),
    "sweep": _small("lr_sweep"),
    "appR": _small("appR"),
    "fig1": _fig1,
    "fig5": _fig5,
}


def reproduce(name: str, quick: bool = True, data: str | None = None, out: str = "results") -> dict:
    """Run one experiment, or ``all`` of them with a claim / paper / measured / PASS table.

    The output folder is created and checked for writing before any work (a path under a file or a
    read-only folder is a one-line error, not a traceback after the first run).
    """
    if name != "all" and name not in EXPERIMENTS:
        raise ConslawError(f"unknown experiment {name!r}", f"use one of {', '.join(EXPERIMENTS)}, all")
    ensure_dir(out)
    if name == "all":
        results = {key: run(quick, data, out) for key, run in EXPERIMENTS.items()}
        claims = [dict(c, experiment=key) for key, r in results.items() for c in r["claims"]]
        return {"experiment": "all", "results": results, "claims": claims, "all_pass": all(c["pass"] for c in claims),
                "runs_computed": sum(r.get("runs_computed", 0) for r in results.values()),
                "runs_reused": sum(r.get("runs_reused", 0) for r in results.values())}
    return EXPERIMENTS[name](quick, data, out)

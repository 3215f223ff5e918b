"""The paper's claims and figures, reproduced (``conslaw reproduce``).

Every experiment's result carries its ``protocol_record`` and its ``deviations`` from the paper's
protocol (:mod:`conslaw.experiments.fidelity`), and ``claims`` rows {claim, paper, measured, pass}.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConslawError
from ..io import ensure_dir

#: options of the figure experiments (``--law``, ``--norm``, ``--device``, ``--executor``, ...)
FIGURE_OPTIONS = ("law", "norm", "device", "executor", "ray_address", "threads", "progress")
#: the options each figure takes (the others are refused for it)
TAKES = {"fig1": set(FIGURE_OPTIONS), "fig5": set(FIGURE_OPTIONS) - {"law", "norm"}}


def _fig1(quick, data, out, **options):
    from .fig1 import run
    return run(quick=quick, data=data, out=out, **options)


def _fig5(quick, data, out, **options):
    from .fig5 import run
    return run(quick=quick, data=data, out=out, **options)


def _small(name):
    def runner(quick, data, out, **options):
        from . import small
        return getattr(small, name)(quick)
    return runner


def _prop51(quick, data, out, **options):
    from .prop51 import prop51
    return prop51(quick)


EXPERIMENTS: dict[str, Callable] = {
    "thm21": _small("thm21"),
    "prop51": _prop51,
    "sweep": _small("lr_sweep"),
    "appR": _small("appR"),
    "fig1": _fig1,
    "fig5": _fig5,
}


def _options_for(name: str, options: dict) -> dict:
    """The options ``name`` takes (only the figures take any)."""
    return {k: v for k, v in options.items() if k in TAKES.get(name, set())}


def reproduce(name: str, quick: bool = True, data: str | None = None, out: str = "results", **options) -> dict:
    """Run one experiment, or ``all`` of them with a claim / paper / measured / PASS table.

    The output folder is created and checked for writing before any work (a path under a file or a
    read-only folder is a one-line error, not a traceback after the first run).

    Args:
        name: an experiment of :data:`EXPERIMENTS` or ``all``.
        quick: the reduced protocol.
        data: dataset folder (else SYNTHETIC data).
        out: output folder.
        **options: for fig1: law (eq17 | bn-exact), norm (bn | none); for fig1 and fig5: device, executor
            (local | ray), ray_address, threads, progress. Options left at None are not passed.
    """
    if name != "all" and name not in EXPERIMENTS:
        raise ConslawError(f"unknown experiment {name!r}", f"use one of {', '.join(EXPERIMENTS)}, all")
    options = {k: v for k, v in options.items() if v is not None}
    unknown = set(options) - set(FIGURE_OPTIONS)
    if unknown:
        raise ConslawError(f"unknown options {sorted(unknown)}", f"use {', '.join(FIGURE_OPTIONS)}")
    if name != "all":
        refused = set(options) - TAKES.get(name, set()) - {"progress"}
        if refused:
            raise ConslawError(f"{name} takes no option {', '.join(sorted(refused))}",
                               f"those options are for {', '.join(k for k, v in TAKES.items() if refused <= v)}"
                               if any(refused <= v for v in TAKES.values()) else "drop them")
    ensure_dir(out)
    if name == "all":
        results = {key: run(quick, data, out, **_options_for(key, options)) for key, run in EXPERIMENTS.items()}
        claims = [dict(c, experiment=key) for key, r in results.items() for c in r["claims"]]
        return {"experiment": "all", "results": results, "claims": claims, "all_pass": all(c["pass"] for c in claims),
                "runs_computed": sum(r.get("runs_computed", 0) for r in results.values()),
                "runs_reused": sum(r.get("runs_reused", 0) for r in results.values()),
                "deviations": {key: r.get("deviations", []) for key, r in results.items()}}
    return EXPERIMENTS[name](quick, data, out, **_options_for(name, options))

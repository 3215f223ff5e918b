"""The reference notebook's two 50-network suites (``conslaw bench anchor-suites``).

Sampled exactly as the reference notebook (sibyllema/Conservation_laws,
``scripts/main.ipynb``, parts C and D) draws them with numpy's global RNG
seeded with 0:

- linear: depth = randint(2, 5), widths = randint(2, 6) each (depth + 1 of
  them); the notebook then draws rand(D) twice (its known-law count and its
  Lie-algebra evaluation point), which we replay so later networks match;
- ReLU: depth = randint(2, 5), widths = randint(2, 10) each, bias when
  random() < 0.5; then rand(D) once (the evaluation point), D counting the
  hidden biases.

The notebook lists widths output first; we reverse them (input first).
A network is ``matched`` when num_laws == known_laws.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .catalog import linear, relu
from .count import count


@dataclass
class SuiteNet:
    """One network of a reference suite: its family, widths (input first) and bias."""
    arch: str
    widths: list[int]
    bias: bool


def anchor_suite(kind: str, nets: int = 50, seed: int = 0) -> list[SuiteNet]:
    """The networks of the reference notebook's suite ``kind`` (``linear`` or ``relu``)."""
    rng = np.random.RandomState(seed)
    # the notebook uses np.random.seed(0) and the global RNG; RandomState(0) is the same stream
    suite = []
    for _ in range(nets):
        depth = rng.randint(2, 5)
        dims = [int(rng.randint(2, 6 if kind == "linear" else 10)) for _ in range(depth + 1)]
        weights = sum(a * b for a, b in itertools.pairwise(dims))
        if kind == "linear":
            rng.rand(weights)  # known_conserved_functions_linear's evaluation point
            rng.rand(weights)  # dim_trace_lie_algebra's evaluation point
            suite.append(SuiteNet("linear", dims[::-1], False))
        else:
            bias = bool(rng.random_sample() < 0.5)
            rng.rand(weights + (sum(dims[1:-1]) if bias else 0))  # dim_trace_lie_algebra's point
            suite.append(SuiteNet("relu", dims[::-1], bias))
    return suite


def degree2_suite(kind: str, nets: int = 10, seed: int = 0) -> list[SuiteNet]:
    """The notebook's 10-network degree-2 suites (parts C and D, ``solve(2, ...)``).

    depth = randint(2, 4), widths = randint(2, 5); no bias. Side draws: linear
    rand(D) twice (known-law count, then the rank point of ``solve``), ReLU once.
    """
    rng = np.random.RandomState(seed)
    suite = []
    for _ in range(nets):
        depth = rng.randint(2, 4)
        dims = [int(rng.randint(2, 5)) for _ in range(depth + 1)]
        weights = sum(a * b for a, b in itertools.pairwise(dims))
        for _ in range(2 if kind == "linear" else 1):
            rng.rand(weights)
        suite.append(SuiteNet(kind, dims[::-1], False))
    return suite


def run_discover_suite(kind: str, seed: int = 0, progress: bool = False) -> dict:
    """Degree-2 homogeneous discovery on the 10-network suite; matched = laws found == known count."""
    from .discover import discover

    start = time.perf_counter()
    rows = []
    for i, net in enumerate(tqdm(degree2_suite(kind), desc=kind, disable=not progress, leave=False)):
        arch = linear(*net.widths) if kind == "linear" else relu(*net.widths)
        theta = arch.space.sample(generator=torch.Generator().manual_seed(seed + i))
        known = arch.law_set().rank(theta).rank
        found = discover(arch.fields(), 2, homogeneous=True, seed=seed + i, certify=False)
        rows.append({"widths": net.widths, "D": arch.space.D, "num_laws": found.num_laws, "known_laws": known,
                     "matched": found.num_laws == known})
    return {"nets": len(rows), "matched": sum(r["matched"] for r in rows),
            "seconds": time.perf_counter() - start, "networks": rows}


def discover_suites(progress: bool = False) -> dict:
    """Both degree-2 suites, timed after the one-time warm-up."""
    return timed_suites(run_discover_suite, progress)


def timed_suites(runner, progress: bool) -> dict:
    """``runner`` on the linear and ReLU suites, after a one-time warm-up (torch.func's lazy imports)."""
    start = time.perf_counter()
    count(linear(2, 2, 2))
    warmup = time.perf_counter() - start
    return {"suites": {k: runner(k, progress=progress) for k in ("linear", "relu")}, "warmup_seconds": warmup}


def run_suite(kind: str, nets: int = 50, seed: int = 0, progress: bool = False) -> dict:
    """Count every network of the suite; JSON-ready summary with per-network rows."""
    start = time.perf_counter()
    rows = []
    for i, net in enumerate(tqdm(anchor_suite(kind, nets), desc=kind, disable=not progress, leave=False)):
        arch = linear(*net.widths) if kind == "linear" else relu(*net.widths, bias=net.bias)
        res = count(arch, seed=seed + i)
        rows.append({"widths": net.widths, "bias": net.bias, "D": res.lie.D, "num_laws": res.num_laws,
                     "known_laws": res.known_laws, "matched": res.num_laws == res.known_laws})
    return {"nets": len(rows), "matched": sum(r["matched"] for r in rows),
            "seconds": time.perf_counter() - start, "networks": rows}


def anchor_suites(progress: bool = False) -> dict:
    """Both 50-network suites, timed after the one-time warm-up."""
    return timed_suites(run_suite, progress)

"""The Lie engine against its lower bound, same machine, same run (issue: within 2x at D = 10^4).

For each rung (a linear or ReLU block of D parameters) in its own process:

- ``engine``: ``lie_trace_dimension`` (seed 0, the default settings and thread policy);
- ``brackets``: the bare bracket evaluations the engine needed, drawn again with
  the same seed and the same number of samples per level (``sample_brackets``);
- ``qr``: one Householder QR (R only) of a D x r float64 matrix, r = dim Lie, the
  least linear algebra that certifies a rank-r span;
- ``bound`` = brackets + qr, and ``ratio`` = engine / bound.

Usage: python benchmarks/lower_bound.py [--min-d N] [--max-d N] [--json OUT] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from _isolated import block_size, run_isolated, write_results
from ladder import RUNGS as LADDER_RUNGS

# the scale ladder's rungs (benchmarks/ladder.py), then D = 3 x 10^4
RUNGS = [*LADDER_RUNGS, ("linear", [173, 87, 173], False)]


def one_rung(arch: str, widths: list[int], bias: bool, threads: int | None) -> dict:
    """Time the engine, then its bracket draws and one QR of the final basis, in this process."""
    import torch

    from conslaw import catalog
    from conslaw.lie import lie_trace_dimension, sample_brackets
    from conslaw.threads import engine_threads

    warm = catalog.linear(3, 3, 3)  # torch.func's lazy imports, once, outside the timings
    lie_trace_dimension(warm.fields(None, "gradient"), warm.space.sample("gaussian", torch.Generator()))
    block = catalog.linear(*widths) if arch == "linear" else catalog.relu(*widths, bias=bias)
    source = block.fields(None, "gradient")
    theta = source.space.sample("gaussian", torch.Generator().manual_seed(0))
    start = time.perf_counter()
    lie = lie_trace_dimension(source, theta, seed=0, threads=threads)
    engine = time.perf_counter() - start
    D, r = lie.D, lie.dim
    with engine_threads(D, threads) as used:
        generator = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        for lv in lie.levels:
            for first in range(0, lv.samples, 256):
                sample_brackets(source, theta, lv.level, min(256, lv.samples - first), generator)
        brackets = time.perf_counter() - start
        matrix = torch.randn(D, max(r, 1), dtype=torch.float64, generator=generator)
        start = time.perf_counter()
        torch.geqrf(matrix)
        qr = time.perf_counter() - start
    return {"arch": arch, "widths": widths, "bias": bias, "D": D, "lie_dim": r, "num_laws": lie.num_laws,
            "spectral_gap": lie.spectral_gap, "engine_s": engine, "brackets_s": brackets, "qr_s": qr,
            "bound_s": brackets + qr, "ratio": engine / (brackets + qr), "threads": used,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch": torch.__version__}


def main() -> None:
    """Run every rung up to --max-d in its own process; print a table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-d", type=int, default=0)
    parser.add_argument("--max-d", type=int, default=12000)
    parser.add_argument("--json", default=None)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the engine's policy)")
    parser.add_argument("--rung", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rung:
        arch, widths, bias = json.loads(args.rung)
        print(json.dumps(one_rung(arch, widths, bias, args.threads)))
        return
    rows = []
    for arch, widths, bias in RUNGS:
        if not args.min_d <= block_size(widths, bias) <= args.max_d:
            continue
        row, error = run_isolated(__file__, "--rung", json.dumps([arch, widths, bias]),
                                  ["--threads", str(args.threads)] if args.threads else [])
        if row is None:
            print(f"{arch} {widths}: failed\n{error}", flush=True)
            continue
        rows.append(row)
        print(f"{arch:6s} {widths!s:16s} D={row['D']:6d} laws={row['num_laws']:5d} engine {row['engine_s']:7.2f} s"
              f"  brackets {row['brackets_s']:6.2f} s  qr {row['qr_s']:6.2f} s  ratio {row['ratio']:4.2f}"
              f"  threads {row['threads']}  peak {row['peak_rss_mb']:6.0f} MB", flush=True)
    write_results(args.json, "rungs", rows)

if __name__ == "__main__":
    main()

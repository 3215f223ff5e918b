"""Scale ladder: D from 10^2 to 10^4 (issue: < 2 min and < 24 GB per rung on 2 cores).

Each rung runs in its own process so that its peak resident memory is its own.
Usage: python benchmarks/ladder.py [--max-d N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

from _isolated import block_size, run_isolated, write_results

RUNGS = [
    ("linear", [10, 10, 10], False),
    ("relu", [10, 10, 10], True),
    ("linear", [30, 20, 30], False),
    ("relu", [30, 20, 30], True),
    ("linear", [50, 40, 50], False),
    ("relu", [50, 40, 50], True),
    ("linear", [100, 50, 100], False),
    ("relu", [100, 50, 100], True),
]


def one_rung(arch: str, widths: list[int], bias: bool) -> dict:
    import torch

    from conslaw import catalog
    from conslaw.count import count

    start = time.perf_counter()
    block = catalog.linear(*widths) if arch == "linear" else catalog.relu(*widths, bias=bias)
    result = count(block)
    return {"arch": arch, "widths": widths, "bias": bias, "D": result.lie.D, "num_laws": result.num_laws,
            "known_laws": result.known_laws, "levels": [lv.as_dict() for lv in result.lie.levels],
            "spectral_gap": result.lie.spectral_gap, "seconds": time.perf_counter() - start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-d", type=int, default=20000)
    parser.add_argument("--json", default=None)
    parser.add_argument("--rung", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rung:
        arch, widths, bias = json.loads(args.rung)
        print(json.dumps(one_rung(arch, widths, bias)))
        return
    rows = []
    for arch, widths, bias in RUNGS:
        if block_size(widths, bias) > args.max_d:
            continue
        row, error = run_isolated(__file__, "--rung", json.dumps([arch, widths, bias]))
        if row is None:
            raise SystemExit(f"{arch} {widths}: failed\n{error}")
        rows.append(row)
        print(f"{arch:6s} {widths!s:16s} bias={bias!s:5s} D={row['D']:6d} laws={row['num_laws']:5d} "
              f"known={row['known_laws']:5d} {row['seconds']:7.2f} s  peak {row['peak_rss_mb']:7.0f} MB", flush=True)
    write_results(args.json, "rungs", rows, processor=platform.processor())

if __name__ == "__main__":
    main()

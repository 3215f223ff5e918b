"""Per-step cost of LawMonitor over a long run: the first 10 steps against steps 9 991..10 000.

What a training loop pays per step with the monitor: ``monitor.step(lr, loss)`` (evaluate and record
every law), then ``monitor.summary()`` (the newest errors per family, as a logger reads them). Between
steps the parameters move by a small random update (no backward pass: only the monitor is timed).
Model: an MLP 64-256-256-10 in float32 (769 exact laws with cross entropy, D = 85 002). O(1) per step means the two
medians agree up to the machine's noise.
Usage: python benchmarks/monitor_long_run.py [--steps 10000] [--json OUT]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _report import report
from torch import nn

from conslaw.monitor import LawMonitor
from conslaw.nn import find_laws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    laws = find_laws(model, torch.randn(4, 64), "cross_entropy", numeric=False, batches=2).exact()
    monitor = LawMonitor(model, laws, estimate_constants=False)
    params = list(model.parameters())
    times = []
    for _ in range(args.steps):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn_like(p), alpha=1e-4)
        t0 = time.perf_counter()
        monitor.step(lr=1e-3, loss=1.0)
        monitor.summary()
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    errors = monitor.relative_errors()
    full = time.perf_counter() - t0
    first, last = statistics.median(times[:10]), statistics.median(times[-10:])
    report({"laws": len(laws), "steps": args.steps, "median_first_10_seconds": first,
            "median_last_10_seconds": last, "ratio_last_to_first": last / first,
            "mean_all_seconds": statistics.fmean(times), "relative_errors_full_history_seconds": full,
            "history_shape": list(errors.shape)}, args.json)


if __name__ == "__main__":
    main()

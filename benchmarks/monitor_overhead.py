"""Monitor overhead per SGD step on the CIFAR ResNet-18 (CPU, batch 32): a ratio measured in one run.

Steps alternate with and without the monitor (the same model, optimizer and batches), so that the
machine's noise hits both alike. Laws: every exact law find_laws names (3 393).
Usage: python benchmarks/monitor_overhead.py [--steps N] [--json OUT]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _report import report

from conslaw.models import resnet18_cifar
from conslaw.monitor import LawMonitor
from conslaw.nn import find_laws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = resnet18_cifar()
    found = find_laws(model, torch.randn(2, 3, 32, 32), "cross_entropy", numeric=False, batches=2)
    laws = [entry.law for entry in found.laws if entry.status == "exact"]
    monitor = LawMonitor(model, laws, estimate_constants=False)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    step_times, monitor_times = [], []
    for k in range(args.steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        t1 = time.perf_counter()
        monitor.step(lr=1e-3)
        t2 = time.perf_counter()
        if k:  # the first step warms up
            step_times.append(t1 - t0)
            monitor_times.append(t2 - t1)
    step, mon = sorted(step_times)[len(step_times) // 2], sorted(monitor_times)[len(monitor_times) // 2]
    report({"laws": len(laws), "median_step_seconds": step, "median_monitor_seconds": mon,
            "overhead_ratio": mon / step}, args.json)


if __name__ == "__main__":
    main()

"""Cost of Figure 1's full protocol: find_laws on the width-64 ResNet-18, and one SGD run's per-step time.

Usage: python benchmarks/fig1_cost.py find_laws|steps|sweep [--width 64] [--threads 2] [--steps 3] [--batch 128]
Prints one JSON object (seconds, peak resident memory in GB). Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (a loaded machine stretches wall time, not this)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_gb() -> float:
    """Peak resident memory of this process in GB (Linux ru_maxrss is in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def find_laws_cost(width: int) -> dict:
    """find_laws(numeric=False) on the CIFAR ResNet-18 of Figure 1, as the earlier fig1 called it per run."""
    from conslaw.experiments.fig1 import build_model
    from conslaw.nn import find_laws

    model = build_model(width, "bn", 0)
    example = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    start, cpu = time.perf_counter(), cpu_seconds()
    found = find_laws(model, example, "cross_entropy", numeric=False, batches=2)
    seconds = time.perf_counter() - start
    return {"what": "find_laws", "width": width, "seconds": seconds, "cpu_seconds": cpu_seconds() - cpu,
            "peak_gb": peak_gb(), "laws": len(found.laws), "load_average": os.getloadavg()[0]}


def steps_cost(width: int, steps: int, batch: int) -> dict:
    """Per-step time of one Figure 1 run (SGD + LawMonitor), and of the law check at theta_0."""
    from conslaw.data.cifar import synthetic_cifar10
    from conslaw.experiments.fig1 import architecture_laws, build_model
    from conslaw.experiments.fig1_laws import gradient_residual
    from conslaw.experiments.training import train_monitored

    images, labels = synthetic_cifar10(2048)
    start = time.perf_counter()
    h, control = architecture_laws(width, "bn", "eq17")
    laws_s = time.perf_counter() - start
    model = build_model(width, "bn", 0).to(memory_format=torch.channels_last)  # as fig1.one_run
    start = time.perf_counter()
    gradient_residual(model, h, images, labels, min(batch, 16), batches=1)
    check_s = time.perf_counter() - start
    start, cpu = time.perf_counter(), cpu_seconds()
    train_monitored(model, [h, control], images, labels, 1e-3, steps, batch, 0, memory_format=torch.channels_last)
    step_s = (time.perf_counter() - start) / steps
    step_cpu = (cpu_seconds() - cpu) / steps
    runs, full_steps = 50, 50
    return {"what": "steps", "width": width, "batch": batch, "threads": torch.get_num_threads(),
            "laws_seconds": laws_s, "check_seconds": check_s, "seconds_per_step": step_s,
            "cpu_seconds_per_step": step_cpu, "peak_gb": peak_gb(), "load_average": os.getloadavg()[0],
            "full_fig1_hours": runs * (full_steps * step_s + check_s) / 3600}


def sweep_cost(width: int, steps: int, batch: int) -> dict:
    """A slice of the full Figure 1: seed 0, lr 1e-3, 3e-3, 5e-3, ``steps`` steps, through fig1.one_run."""
    from conslaw.data.cifar import synthetic_cifar10
    from conslaw.experiments.fig1 import one_run
    from conslaw.flows import fit_exponent

    images, labels = synthetic_cifar10(2048)
    config = {"width": width, "norm": "bn", "law": "eq17", "steps": steps, "batch": batch, "device": "cpu",
              "dtype": "float32"}
    lrs, runs = [1e-3, 3e-3, 5e-3], []
    start, cpu = time.perf_counter(), cpu_seconds()
    for lr in lrs:
        runs.append(one_run(lr, 0, config, images, labels))
    return {"what": "sweep", "width": width, "batch": batch, "steps": steps, "learning_rates": lrs,
            "final_error_law": [r["errors_law"][-1] for r in runs],
            "final_error_control": [r["errors_control"][-1] for r in runs],
            "exponent_law": fit_exponent(lrs, [r["errors_law"][-1] for r in runs]),
            "exponent_control": fit_exponent(lrs, [r["errors_control"][-1] for r in runs]),
            "residual_theta0": [r["residual_theta0"] for r in runs],
            "seconds": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu, "peak_gb": peak_gb(),
            "load_average": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["find_laws", "steps", "sweep"])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.what == "find_laws":
        result = find_laws_cost(args.width)
    elif args.what == "steps":
        result = steps_cost(args.width, args.steps, args.batch)
    else:
        result = sweep_cost(args.width, args.steps, args.batch)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

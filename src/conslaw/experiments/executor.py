"""Running the (lr, seed) runs of a figure: locally one after the other, or as Ray tasks; one cache for both.

A :class:`Job` is one run: its cache stem and inputs (the run's key), and a module-level function
with its arguments (so that Ray can ship it to a worker). Either executor first reuses every valid
record of the :class:`~conslaw.experiments.protocol.RunCache`, then computes the missing runs and
writes each record as soon as its run finishes (a killed sweep resumes where it stopped). The
results are the same, bit for bit, whichever executor computed them: each run seeds its own model
and mini-batch order, and Ray workers run one thread each like the local executor under
``threads=1``.

The progress bar counts runs and shows the elapsed time and the ETA (tqdm's ``<remaining``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from ..errors import ConslawError
from .protocol import RunCache, RunSchema

EXECUTORS = ("local", "ray")


@dataclass
class Job:
    """One run: ``fn(*args)`` returns its result dict; ``stem`` and ``inputs`` address its record."""

    stem: str
    inputs: dict
    fn: Callable[..., dict]
    args: tuple = field(default_factory=tuple)


@contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` torch threads (None: torch's default), then restore the previous number.

    The quick protocols pass 1: their models are tiny, and on a shared 2-core machine two OpenMP threads
    spin against the other loads (measured: ``reproduce fig1 --quick`` 125 s of CPU with 2 threads, 6 s
    with 1).
    """
    import torch

    previous = torch.get_num_threads()
    try:
        set_threads(threads)
        yield
    finally:
        torch.set_num_threads(previous)


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (None: leave torch's default); returns the number in use."""
    import torch

    if threads is not None:
        if threads < 1:
            raise ConslawError(f"--threads {threads}", "use a positive number of threads")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def run_jobs(cache: RunCache, schema: RunSchema, jobs: list[Job], desc: str, progress: bool = True,
             executor: str = "local", ray_address: str | None = None) -> list[dict]:
    """The result of every job, in the order of ``jobs`` (reused from ``cache`` or computed and stored)."""
    if executor not in EXECUTORS:
        raise ConslawError(f"unknown executor {executor!r}", f"use one of {', '.join(EXECUTORS)}")
    results: list[dict | None] = [cache.lookup(job.stem, job.inputs, schema) for job in jobs]
    missing = [i for i, r in enumerate(results) if r is None]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(missing), desc=desc, unit="run", disable=not progress)
    try:
        if executor == "local" or not missing:
            for i in missing:
                job = jobs[i]
                results[i] = cache.store(job.stem, job.inputs, schema, job.fn(*job.args))
                bar.update(1)
        else:
            _run_ray(cache, schema, jobs, missing, results, bar, ray_address)
    finally:
        bar.close()
    return results  # type: ignore[return-value]


def _run_ray(cache, schema, jobs, missing, results, bar, ray_address) -> None:
    """Submit the missing runs as Ray tasks (one CPU each); store each record as its task finishes."""
    try:
        import ray
    except ImportError as exc:
        raise ConslawError("--executor ray needs Ray, which is not installed",
                           "pip install 'conslaw[ray]' (or pip install ray)") from exc
    started = False
    if not ray.is_initialized():
        kwargs = {"address": ray_address} if ray_address else {
            "num_cpus": int(os.environ.get("CONSLAW_RAY_CPUS", os.cpu_count() or 1))}
        ray.init(log_to_driver=False, include_dashboard=False, **kwargs)
        started = True
    try:
        task = ray.remote(num_cpus=1)(_remote_run)
        shipped: dict[int, object] = {}

        def ship(arg):  # large tensors (the data set) go to the object store once, not once per task
            if hasattr(arg, "numel") and arg.numel() > 100_000:
                if id(arg) not in shipped:
                    shipped[id(arg)] = ray.put(arg)
                return shipped[id(arg)]
            return arg

        pending = {task.remote(jobs[i].fn, *map(ship, jobs[i].args)): i for i in missing}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                job = jobs[i]
                results[i] = cache.store(job.stem, job.inputs, schema, ray.get(ref))
                bar.update(1)
    finally:
        if started:
            ray.shutdown()


def _remote_run(fn, *args):
    """A Ray task: one run on one thread (as the local executor with threads=1); Ray resolves the shipped args."""
    import torch

    torch.set_num_threads(1)
    return fn(*args)

"""Thread policy of the engine: one intra-op thread for tiny ops, the caller's setting for large ones.

The Lie engine on a small network is thousands of tiny ops (jvp of a
100-parameter field, a 40 x 40 QR); intra-op threading only adds
synchronisation to them, and on a shared machine (a cluster node, a
dataloader worker, a CI runner) spin-waiting threads collapse: the two
50-network reference suites took 46 s with 2 threads beside two busy
processes and 14 s with one (benchmarks/RESULTS.md). Large factorizations
(D >= ``SMALL_D``) use the caller's setting, capped at the cores that are
free now: ``cores - (load - 1)`` with ``load`` the 1-minute load average
(this process counts for one), at least 1. Beside one busy process on a
2-core machine that is 1 thread: a 1024 x 1024 SVD then took 0.4 s, against
3.9 s with 2 threads.

The setting is process-wide (``torch.set_num_threads``): :func:`engine_threads`
sets it for the duration of a count and always restores the caller's value.
Override with ``threads=`` (API), ``--threads`` (CLI) or the environment
variable ``CONSLAW_THREADS``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .errors import ConslawError

__all__ = ["SMALL_D", "engine_threads", "free_cores", "policy_threads"]

#: below this many parameters the engine's ops are too small to gain from intra-op threads
SMALL_D = 1024


def policy_threads(D: int, threads: int | None = None) -> int:
    """Intra-op threads for an engine run on D parameters: ``threads``, else $CONSLAW_THREADS, else the policy.

    The policy: 1 when D < :data:`SMALL_D`, else the current ``torch.get_num_threads()`` capped at
    :func:`free_cores`.

    Raises:
        ConslawError: ``threads`` or $CONSLAW_THREADS is not a positive integer.
    """
    if threads is None:
        env = os.environ.get("CONSLAW_THREADS", "").strip()
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise ConslawError(f"CONSLAW_THREADS must be a positive integer, got {env!r}",
                                   "unset it or set e.g. CONSLAW_THREADS=1") from None
            what = "CONSLAW_THREADS"
        else:
            return 1 if D < SMALL_D else max(1, min(torch.get_num_threads(), free_cores()))
    else:
        what = "threads"
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConslawError(f"{what} must be a positive integer, got {threads!r}", "pass e.g. threads=1 (--threads 1)")
    return threads


def free_cores() -> int:
    """Cores not busy with other processes: usable cores - (1-minute load average - 1), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, round(cores - max(0.0, load - 1.0))))


@contextmanager
def engine_threads(D: int, threads: int | None = None) -> Iterator[int]:
    """Run the body with :func:`policy_threads` intra-op threads; restore the caller's setting after."""
    before = torch.get_num_threads()
    wanted = policy_threads(D, threads)
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)

"""Size guards: estimate the memory (and rough time) of a job before starting it, refuse what cannot fit.

A count of a network with D = 8 million parameters would need a D x D float64
basis (512 TB): it must be refused in a second with the estimate and a fix,
not after minutes of swapping or an out-of-memory kill. The limit is the
memory available now (``MemAvailable`` of ``/proc/meminfo``, else
``os.sysconf``), or ``max_memory`` (GB) when given (``--max-memory``).
"""

from __future__ import annotations

import math
import os

from .errors import ConslawError

__all__ = ["available_memory", "check_memory", "count_estimate", "format_bytes", "format_seconds", "memory_limit"]

#: seconds per D^3 of the Lie engine on two CPU cores (linear [100, 50, 100], D = 10^4: ~70 s; a rough guide)
SECONDS_PER_D3 = 1e-10


def available_memory() -> int | None:
    """Bytes of memory available to a new job now (Linux ``MemAvailable``; else free pages), None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_limit(max_memory: float | None = None) -> tuple[int | None, str]:
    """(limit in bytes or None when unknown, what it is) from ``max_memory`` GB or the available memory.

    Raises:
        ConslawError: ``max_memory`` is not a positive finite number.
    """
    if max_memory is not None:
        if isinstance(max_memory, bool) or not isinstance(max_memory, int | float) or \
                not math.isfinite(max_memory) or max_memory <= 0:
            raise ConslawError(f"max_memory must be a positive number of GB, got {max_memory!r}",
                               "pass e.g. --max-memory 16")
        return int(max_memory * 2**30), "the --max-memory limit"
    return available_memory(), "the memory available on this machine"


def format_bytes(n: float) -> str:
    """``n`` bytes as a short human-readable size (B .. EiB; powers of ten beyond, for any int)."""
    if n >= 1024 ** 7:
        return f"10^{math.log10(n):.0f} B"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(n) < 1024 or unit == "EiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} EiB"


def format_seconds(s: float) -> str:
    """A rough duration: seconds, minutes, hours, days or years."""
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600), (2 * 31557600, "days", 86400)):
        if s < limit:
            return f"{s / size:.0f} {unit}"
    return f"{s / 31557600:.2g} years"


def count_estimate(D: int, network_D: int | None = None, margin: int = 8, max_chunk: int = 256,
                   batch: int = 256, levels: int = 4, closed_forms: bool = True) -> tuple[int, float]:
    """(bytes, seconds): rough peak memory and time of ``count`` with D (block) and network_D parameters.

    Memory: the D x D float64 basis of the engine (reserved once, filled in place), the Gram
    matrix of the catalog's closed forms (at most D independent rows, kept as a D x D matrix), chunks
    of up to ``max_chunk`` brackets of length D with their projection, QR and directions (five n x D
    arrays), and the nested forward-mode evaluation of ``batch`` brackets over the network's
    parameters at ``levels`` levels. Time: ~ D^3 (the engine's projections and QRs), measured.
    ``closed_forms=False``: the Lie engine alone (no Gram matrix).
    """
    network_D = network_D or D
    n = min(max_chunk, D + margin)
    basis = 8 * D * D + (8 * D * D if closed_forms else 0)
    chunks = 5 * 8 * n * D
    brackets = batch * 8 * network_D * (2 * levels + 2)
    return basis + chunks + brackets, SECONDS_PER_D3 * float(D) ** 3


def check_memory(estimate: int, what: str, fix: str, max_memory: float | None = None,
                 seconds: float | None = None) -> None:
    """Refuse (one-line ConslawError with the estimate and the fix) when ``estimate`` bytes exceed the limit.

    Args:
        estimate: bytes the job would need.
        what: the job, e.g. ``count linear [2000, 2000, 2000] (D = 8,000,000)``.
        fix: how to make it smaller (``--max-memory GB`` is added to it).
        max_memory: GB allowed; None: the memory available now.
        seconds: the rough time, reported with the estimate.
    """
    limit, source = memory_limit(max_memory)
    if limit is None or estimate <= limit:
        return
    took = f" and roughly {format_seconds(seconds)}" if seconds is not None else ""
    raise ConslawError(f"{what} would need about {format_bytes(estimate)} of memory{took}, more than {source} "
                       f"({format_bytes(limit)})", f"{fix}, or pass --max-memory GB to raise the limit")

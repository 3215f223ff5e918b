"""Run one benchmark case in its own process (its peak memory is its own) and write the results file.

The scale benchmarks (``ladder.py``, ``lower_bound.py``, ``find_laws_scale.py``) re-run their own script
with a hidden option naming one case; the child prints the case's result as its last line of JSON.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import sys
import time


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (Linux /proc), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def run_isolated(script: str, option: str, case: str, extra: list[str] | None = None,
                 max_rss_gb: float | None = None) -> tuple[dict | None, str]:
    """``python script option case [extra]`` in a child process: (its last JSON line, "") or (None, why it failed).

    With ``max_rss_gb`` the child is killed when its resident memory passes that many GB (a shared machine).
    """
    proc = subprocess.Popen([sys.executable, script, option, case, *(extra or [])], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak = 0
    while max_rss_gb is not None and proc.poll() is None:
        peak = max(peak, rss_bytes(proc.pid))
        if peak > max_rss_gb * 2**30:
            proc.kill()
            proc.communicate()
            return None, f"killed above {max_rss_gb} GB of resident memory"
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode:
        return None, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), ""


def block_size(widths: list[int], bias: bool) -> int:
    """D of a linear / ReLU block with these widths (hidden biases when ``bias``)."""
    return sum(a * b for a, b in itertools.pairwise(widths)) + (sum(widths[1:-1]) if bias else 0)


def write_results(path: str | None, key: str, rows: list[dict], **extra) -> None:
    """Write ``{machine, cpus, load (1, 5, 15-minute averages now), date, **extra, key: rows}`` to ``path`` (if any)."""
    if not path:
        return
    with open(path, "w") as fh:
        json.dump({"machine": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg(),
                   "date": time.strftime("%Y-%m-%d %H:%M"), **extra, key: rows}, fh, indent=1)

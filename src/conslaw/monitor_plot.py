"""Plot a LawMonitor: relative errors (log scale) and the loss against optimizer steps.

Built on ``matplotlib.figure.Figure`` (the object API): the global backend and pyplot's state are never
touched, so a notebook's inline plots keep working and the Figure displays itself there. With more than
``max_lines`` columns, the laws are grouped by family: one line per family (its worst law at each record)
over a band from its best to its worst law, and one legend entry ``family (n laws)``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from .io import save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .monitor import LawMonitor

#: errors below this are drawn at this value (log scale)
FLOOR = 1e-18


def plot_monitor(monitor: LawMonitor, path: str | None = None, max_lines: int = 8) -> Figure:
    """The monitor's Figure: top, relative errors; bottom, the loss (when recorded).

    Args:
        monitor: the monitor.
        path: also write the figure there (format from the suffix, PNG by default), atomically.
        max_lines: up to this many columns get a line each; beyond, one line per law family.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    steps = monitor.recorded_steps
    errors = np.maximum(monitor.relative_errors(), FLOOR)
    if errors.shape[1] <= max_lines:
        for j, name in enumerate(monitor.columns):
            top.semilogy(steps, errors[:, j], label=name)
        top.set_title(f"{errors.shape[1]} laws")
    else:
        by_family: dict[str, list[int]] = defaultdict(list)
        for j, family in enumerate(monitor.column_families):
            by_family[family].append(j)
        for family, cols in by_family.items():
            block = errors[:, cols]
            (line,) = top.semilogy(steps, block.max(axis=1), label=f"{family} ({len(cols)} laws): worst")
            top.fill_between(steps, block.min(axis=1), block.max(axis=1), color=line.get_color(), alpha=0.2)
        top.set_title(f"{errors.shape[1]} laws in {len(by_family)} families (band: best to worst law)")
    top.set_ylabel("relative error")
    top.legend(fontsize=7, loc="upper left")
    losses = monitor.losses
    if np.isfinite(losses).any():
        bottom.plot(steps, losses, marker="." if len(steps) < 50 else None)
    else:
        bottom.text(0.5, 0.5, "no loss recorded (step(loss=...) or set_loss(loss))", ha="center", va="center",
                    transform=bottom.transAxes, fontsize=8)
    bottom.set_ylabel("loss")
    bottom.set_xlabel("optimizer step")
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=120)
    return fig

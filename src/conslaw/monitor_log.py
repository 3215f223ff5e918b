"""Log a LawMonitor's newest record to TensorBoard or Weights & Biases, importing neither.

Logged (tag prefix ``conslaw/``): the worst relative error of every law family (``conslaw/family/<name>``),
the worst over all laws (``conslaw/worst``), the loss when recorded, and a histogram of log10 of all laws'
relative errors (``conslaw/log10_relative_error``). The writer is recognised by its methods:
``add_scalar`` + ``add_histogram`` (torch.utils.tensorboard's ``SummaryWriter``, tensorboardX) or ``log``
(a ``wandb`` run, or the ``wandb`` module itself); each costs O(laws) whatever the run's length.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConslawError

if TYPE_CHECKING:
    from .monitor import LawMonitor

#: errors below this are logged at this value in the log10 histogram
FLOOR = 1e-18


def scalars(monitor: LawMonitor) -> dict[str, float]:
    """The scalars of the newest record: ``conslaw/family/<name>``, ``conslaw/worst``, ``conslaw/loss``."""
    out = {f"conslaw/{key}": value for key, value in monitor.summary().items()}
    loss = float(monitor.losses[-1])
    if math.isfinite(loss):
        out["conslaw/loss"] = loss
    return out


def log_to(monitor: LawMonitor, writer: Any, step: int | None = None) -> dict[str, float]:
    """Log the newest record to ``writer`` (module docstring) at ``step`` (default: its optimizer step).

    Args:
        monitor: the monitor.
        writer: a TensorBoard ``SummaryWriter`` or a W&B run.
        step: the global step to log at.

    Raises:
        ConslawError: ``writer`` is neither.
    """
    step = int(monitor.recorded_steps[-1]) if step is None else int(step)
    values = scalars(monitor)
    log_errors = np.log10(np.maximum(monitor.last_errors(), FLOOR))
    if hasattr(writer, "add_scalar") and hasattr(writer, "add_histogram"):
        for tag, value in values.items():
            writer.add_scalar(tag, value, step)
        writer.add_histogram("conslaw/log10_relative_error", log_errors, step)
    elif hasattr(writer, "log"):
        wandb = sys.modules.get("wandb")
        payload: dict[str, Any] = dict(values)
        if wandb is not None:
            payload["conslaw/log10_relative_error"] = wandb.Histogram(log_errors)
        writer.log(payload, step=step)
    else:
        raise ConslawError(f"log_to expects a TensorBoard SummaryWriter or a W&B run, got {type(writer).__name__}",
                           "pass torch.utils.tensorboard.SummaryWriter(...) or wandb.init(...)")
    return values

"""PyTorch Lightning: ``LawMonitorCallback`` records the conservation laws after every optimizer step.

    from conslaw.integrations.lightning import LawMonitorCallback
    callback = LawMonitorCallback(laws="auto", every_n_steps=10, loss="cross_entropy")
    trainer = lightning.Trainer(callbacks=[callback], ...)
    trainer.fit(module, data)
    callback.relative_errors(); callback.plot("laws.png")

The monitor starts on ``on_fit_start`` with a given list of laws, or, with ``laws="auto"``, on the first
training batch (before any step): :func:`conslaw.find_laws` runs on the network with that batch's inputs.
It is attached to the torch optimizer inside Lightning's ``LightningOptimizer``, whose ``step`` Lightning
calls once per real update: gradient accumulation (``accumulate_grad_batches``) and manual optimization
(``self.optimizers().step()``) record exactly the updates. The weight decay of Thm 2.1 comes from the
optimizer's parameter groups. At every batch that ended with a record, the batch's loss is stored with
it and the scalars of :func:`conslaw.monitor_log.scalars` go to ``pl_module.log_dict`` (hence to every
logger of the trainer), plus a histogram of log10 relative errors to loggers that take one (TensorBoard).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConslawError
from ..laws import Law
from ..monitor import LawMonitor
from ..monitor_log import FLOOR, scalars
from ._common import MonitorResults, resolve_laws

try:
    from lightning.pytorch import Callback
except ImportError:  # the standalone package
    try:
        from pytorch_lightning import Callback  # type: ignore[assignment]
    except ImportError as exc:
        raise ImportError("conslaw.integrations.lightning needs PyTorch Lightning: pip install 'conslaw[lightning]'"
                          ) from exc

__all__ = ["LawMonitorCallback"]


class LawMonitorCallback(Callback, MonitorResults):
    """Record the laws of a LightningModule's network after every (n-th) optimizer step (module docstring).

    Args:
        laws: ``"auto"`` (find_laws on the first batch) or the laws to monitor.
        every_n_steps: record after every n-th optimizer step.
        loss: the loss find_laws assumes with ``"auto"`` (``mse``, ``cross_entropy``, ...).
        module: attribute of the LightningModule that holds the network (None: the LightningModule itself).
        log: log the scalars (and a histogram) through the trainer's loggers.
        estimate_constants: measure |grad|^2 at the records for Prop 5.1's bound.
        find_kwargs: more keyword arguments of find_laws (e.g. ``{"batches": 2}``).
    """

    def __init__(self, laws: str | Sequence[Law] = "auto", every_n_steps: int = 1, loss: str = "cross_entropy",
                 module: str | None = None, log: bool = True, estimate_constants: bool = True,
                 find_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.laws, self.every_n_steps, self.loss, self.module = laws, every_n_steps, loss, module
        self.log, self.estimate_constants, self.find_kwargs = log, estimate_constants, find_kwargs
        self.monitor: LawMonitor | None = None
        self._remove: Callable[[], None] | None = None
        self._records = 0

    def __repr__(self) -> str:
        laws = self.laws if isinstance(self.laws, str) else f"{len(self.laws)} laws"
        return f"LawMonitorCallback(laws={laws}, every_n_steps={self.every_n_steps}, monitor={self.monitor!r})"

    def _network(self, pl_module: torch.nn.Module) -> torch.nn.Module:
        return pl_module if self.module is None else getattr(pl_module, self.module)

    def _start(self, trainer: Any, pl_module: torch.nn.Module, batch: Any) -> None:
        network = self._network(pl_module)
        laws = resolve_laws(network, self.laws, batch, self.loss, self.find_kwargs)
        names = {n for n, _ in network.named_parameters()}
        foreign = [p for law in laws for p in law.params if p not in names]
        if foreign:
            raise ConslawError(f"the laws use parameters such as {foreign[0]!r} that {type(network).__name__} does "
                               "not have", "pass module='<attribute>' when the laws were found on the network "
                               "inside the LightningModule (e.g. module='net'), or laws='auto'")
        self.monitor = LawMonitor(network, laws, every_n_steps=self.every_n_steps,
                                  estimate_constants=self.estimate_constants)
        monitored = {id(p) for p in network.parameters()}
        optimizers = [opt for opt in trainer.optimizers
                      if any(id(p) in monitored for g in opt.param_groups for p in g["params"])]
        if not optimizers:
            raise ConslawError("no optimizer of the trainer trains the monitored network",
                               "return the network's parameters from configure_optimizers")
        self._remove = self.monitor.attach(optimizers[0])

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Start with the given laws (``laws="auto"`` waits for the first batch)."""
        self.monitor = None
        if not isinstance(self.laws, str):
            self._start(trainer, pl_module, None)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """With ``laws="auto"``: find the laws on the first batch, before the first step."""
        if self.monitor is None:
            self._start(trainer, pl_module, batch)
        if self.monitor is not None:
            self._records = len(self.monitor.values)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Store the batch's loss with the record it ended with, and log."""
        monitor = self.monitor
        if monitor is None or len(monitor.values) == self._records:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor | float):
            monitor.set_last_loss(loss)
        if self.log:
            pl_module.log_dict(scalars(monitor), on_step=True, on_epoch=False)
            log_errors = np.log10(np.maximum(monitor.last_errors(), FLOOR))
            for logger in trainer.loggers:
                experiment: Any = getattr(logger, "experiment", None)
                if hasattr(experiment, "add_histogram"):
                    experiment.add_histogram("conslaw/log10_relative_error", log_errors, trainer.global_step)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Detach from the optimizer (the results stay)."""
        if self._remove is not None:
            self._remove()
            self._remove = None

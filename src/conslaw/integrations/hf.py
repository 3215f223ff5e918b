"""Hugging Face ``Trainer``: ``LawMonitorCallback`` records the conservation laws after every optimizer step.

    from conslaw.integrations.hf import LawMonitorCallback
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, ...)
    callback = LawMonitorCallback(laws="auto", every_n_steps=10).add_to(trainer)
    trainer.train()
    callback.relative_errors(); callback.plot("laws.png")

On ``on_train_begin`` the monitor starts on the Trainer's model: with ``laws="auto"``,
:func:`conslaw.find_laws` runs with the inputs of the first training batch (drawn with the random state
saved and restored, so that training sees the same batches and dropout masks as without the callback).
It is attached to the torch optimizer inside accelerate's ``AcceleratedOptimizer``, whose ``step`` runs
once per real update (not for gradient-accumulation micro-batches); the weight decay of Thm 2.1 comes from
the optimizer's parameter groups (the Trainer's AdamW decays all but biases and norms: per parameter).

Logging: whenever the Trainer logs (``logging_steps``), the scalars of the newest record
(:func:`conslaw.monitor_log.scalars`) are added to the logged values, so that every reporting integration
(TensorBoard, W&B, ...) receives them. The Trainer calls callbacks in order and reporting integrations come
first, so :meth:`LawMonitorCallback.add_to` puts the callback before them; passed as
``Trainer(callbacks=[callback])`` it still records, but its scalars reach only the Trainer's log history.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..errors import ConslawError
from ..laws import Law
from ..monitor import LawMonitor
from ..monitor_log import scalars
from ._common import MonitorResults, resolve_laws

try:
    from transformers import TrainerCallback
except ImportError as exc:
    raise ImportError("conslaw.integrations.hf needs transformers and accelerate: pip install 'conslaw[hf]'") from exc

__all__ = ["LawMonitorCallback"]


class LawMonitorCallback(TrainerCallback, MonitorResults):
    """Record the laws of a ``Trainer``'s model after every (n-th) optimizer step (module docstring).

    Args:
        laws: ``"auto"`` (find_laws on the first batch) or the laws to monitor.
        every_n_steps: record after every n-th optimizer step.
        loss: the loss find_laws assumes with ``"auto"`` (``cross_entropy`` for classifiers and language models).
        log: add the scalars to the Trainer's logs.
        estimate_constants: measure |grad|^2 at the records for Prop 5.1's bound.
        find_kwargs: more keyword arguments of find_laws (e.g. ``{"batches": 2}``).
    """

    def __init__(self, laws: str | Sequence[Law] = "auto", every_n_steps: int = 1, loss: str = "cross_entropy",
                 log: bool = True, estimate_constants: bool = True,
                 find_kwargs: Mapping[str, Any] | None = None) -> None:
        self.laws, self.every_n_steps, self.loss, self.log = laws, every_n_steps, loss, log
        self.estimate_constants, self.find_kwargs = estimate_constants, find_kwargs
        self.monitor: LawMonitor | None = None
        self._remove: Callable[[], None] | None = None
        self._logged = 0

    def __repr__(self) -> str:
        laws = self.laws if isinstance(self.laws, str) else f"{len(self.laws)} laws"
        return f"LawMonitorCallback(laws={laws}, every_n_steps={self.every_n_steps}, monitor={self.monitor!r})"

    def add_to(self, trainer: Any) -> LawMonitorCallback:
        """Add this callback to ``trainer`` before its reporting integrations (right after the flow callback),
        so that its scalars reach them; returns the callback."""
        handler = trainer.callback_handler
        if self in handler.callbacks:
            handler.callbacks.remove(self)
        handler.callbacks.insert(min(1, len(handler.callbacks)), self)
        return self

    def on_train_begin(self, args: Any, state: Any, control: Any, model: torch.nn.Module | None = None,
                       optimizer: Any = None, train_dataloader: Any = None, **kwargs: Any) -> None:
        """Find the laws (``"auto"``) and attach the monitor to the optimizer."""
        if model is None or optimizer is None:
            raise ConslawError("the Trainer gave the callback no model or optimizer at on_train_begin",
                               "use transformers >= 4.40 (it passes both)")
        batch = None
        if isinstance(self.laws, str):
            if train_dataloader is None:
                raise ConslawError("laws='auto' needs the training dataloader", "pass laws=[...] instead")
            with torch.random.fork_rng(devices=[]):  # the first batch, leaving the random state as it was
                batch = next(iter(train_dataloader))
        laws = resolve_laws(model, self.laws, batch, self.loss, self.find_kwargs)
        self.monitor = LawMonitor(model, laws, every_n_steps=self.every_n_steps,
                                  estimate_constants=self.estimate_constants)
        self._remove = self.monitor.attach(optimizer)
        self._logged = len(self.monitor.values)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        """Add the newest record's scalars to a training log (once per record)."""
        monitor = self.monitor
        if not self.log or monitor is None or logs is None or len(monitor.values) == self._logged:
            return
        if any(key.startswith("eval_") for key in logs):
            return
        logs.update(scalars(monitor))
        self._logged = len(monitor.values)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Detach from the optimizer (the results stay)."""
        if self._remove is not None:
            self._remove()
            self._remove = None

"""What the framework callbacks share: the model's inputs in a batch, the laws to monitor, the results.

``laws="auto"`` runs :func:`conslaw.find_laws` on the model at its initial parameters with the first
training batch (inputs only) and monitors the laws verified exact; a list of laws is monitored as given.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConslawError
from ..laws import Law
from ..monitor import LawMonitor

#: batch keys that hold targets, not inputs (dropped from a dict batch)
LABEL_KEYS = ("labels", "label", "label_ids", "targets", "target", "y")


def example_input(batch: Any) -> Any:
    """The model's inputs in a training batch: a tensor as is, the first element of ``(x, y, ...)``, a dict
    without its label keys (:data:`LABEL_KEYS`).

    Raises:
        ConslawError: a batch of another kind.
    """
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Sequence) and batch and isinstance(batch[0], torch.Tensor | Mapping):
        return example_input(batch[0])
    if isinstance(batch, Mapping):
        inputs = {k: v for k, v in batch.items() if k not in LABEL_KEYS and isinstance(v, torch.Tensor)}
        if inputs:
            return inputs
    raise ConslawError(f"cannot tell the model's inputs in a batch of type {type(batch).__name__}",
                       "pass laws=find_laws(model, example_input).exact() instead of laws='auto'")


def _cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        return {k: _cpu(v) for k, v in value.items()}
    return value


def resolve_laws(model: nn.Module, laws: str | Sequence[Law], batch: Any, loss: str,
                 find_kwargs: Mapping[str, Any] | None) -> list[Law]:
    """The laws to monitor: ``laws`` itself, or (``"auto"``) the exact laws find_laws names for ``model``
    with the inputs of ``batch`` (on a CPU copy when the model is on another device).

    Raises:
        ConslawError: ``laws`` is neither ``"auto"`` nor a sequence of laws, or find_laws finds no exact law.
    """
    if isinstance(laws, str):
        if laws != "auto":
            raise ConslawError(f"laws must be 'auto' or a list of laws, got {laws!r}",
                               "use laws='auto' or laws=find_laws(model, x).exact()")
        from ..nn import find_laws

        inputs = example_input(batch)
        device = next(model.parameters()).device
        target = model if device.type == "cpu" else copy.deepcopy(model).cpu()
        found = find_laws(target, _cpu(inputs), loss, **{"numeric": False, **(find_kwargs or {})})
        chosen = [c.law for c in found.exact()]
        if not chosen:
            raise ConslawError(f"find_laws found no exact law for {type(model).__name__}: nothing to monitor",
                               "check find_laws(model, x) yourself, or pass laws=[...]")
        return chosen
    return [getattr(law, "law", law) for law in laws]


class MonitorResults:
    """The results of the wrapped :class:`conslaw.LawMonitor` (``self.monitor``), as a callback exposes them."""

    monitor: LawMonitor | None

    def _started(self) -> LawMonitor:
        if self.monitor is None:
            raise ConslawError("the monitor has not started: it starts with training (the first batch)",
                               "read the results after trainer.fit() / trainer.train()")
        return self.monitor

    def relative_errors(self, corrected: bool = True) -> np.ndarray:
        """:meth:`conslaw.LawMonitor.relative_errors`."""
        return self._started().relative_errors(corrected)

    def last_errors(self, corrected: bool = True) -> np.ndarray:
        """:meth:`conslaw.LawMonitor.last_errors`."""
        return self._started().last_errors(corrected)

    def prop51_bound(self, c_h: float = 2.0) -> np.ndarray:
        """:meth:`conslaw.LawMonitor.prop51_bound`."""
        return self._started().prop51_bound(c_h)

    def summary(self) -> dict[str, float]:
        """:meth:`conslaw.LawMonitor.summary`."""
        return self._started().summary()

    def table(self) -> list[dict]:
        """:meth:`conslaw.LawMonitor.table`."""
        return self._started().table()

    def to_csv(self, path: str) -> None:
        """:meth:`conslaw.LawMonitor.to_csv`."""
        self._started().to_csv(path)

    def to_json(self, path: str) -> None:
        """:meth:`conslaw.LawMonitor.to_json`."""
        self._started().to_json(path)

    def plot(self, path: str | None = None):
        """:meth:`conslaw.LawMonitor.plot` (a matplotlib Figure)."""
        return self._started().plot(path)

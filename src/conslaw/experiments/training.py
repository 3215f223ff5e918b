"""The SGD loop shared by the figure experiments: plain SGD on a classification set, laws monitored."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models import seeded
from ..monitor import LawMonitor


def init_model(factory, seed: int, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """``factory()`` seeded with ``seed``, initialized in float32 whatever torch's default dtype, then cast.

    The initial draws depend on the default dtype: initializing in float32 always gives the same
    theta_0 for a seed in every process (a test under a float64 default, a Ray worker), as the run
    cache's key assumes.
    """
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        model = seeded(factory, seed)
    finally:
        torch.set_default_dtype(default)
    return model.to(device, dtype)


def train_monitored(model, laws, inputs, labels, lr: float, steps: int, batch: int, seed: int,
                    device: str = "cpu", memory_format: torch.memory_format | None = None) -> LawMonitor:
    """SGD (no momentum, no weight decay, Sec 5.2) on random mini-batches; the monitor records every step.

    The mini-batch order is drawn on the CPU from ``seed`` (the same batches on every device); the
    model must already be on ``device``, whither each mini-batch is moved (in ``memory_format``, e.g.
    channels-last for a channels-last convolutional model, when given).
    """
    monitor = LawMonitor(model, laws, estimate_constants=False)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
    order = torch.Generator().manual_seed(1000 + seed)
    for _ in range(steps):
        idx = torch.randint(0, len(inputs), (batch,), generator=order)
        opt.zero_grad()
        x = inputs[idx].to(device)
        if memory_format is not None:
            x = x.contiguous(memory_format=memory_format)
        loss = F.cross_entropy(model(x), labels[idx].to(device))
        loss.backward()
        opt.step()
        monitor.step(lr=lr, loss=float(loss.detach()))
    return monitor

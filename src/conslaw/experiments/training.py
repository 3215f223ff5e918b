"""The SGD loop shared by the figure experiments: plain SGD on a classification set, laws monitored."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..monitor import LawMonitor


def train_monitored(model, laws, inputs, labels, lr: float, steps: int, batch: int, seed: int,
                    device: str = "cpu") -> LawMonitor:
    """SGD (no momentum, no weight decay, Sec 5.2) on random mini-batches; the monitor records every step.

    The mini-batch order is drawn on the CPU from ``seed`` (the same batches on every device); the
    model must already be on ``device``, whither each mini-batch is moved.
    """
    monitor = LawMonitor(model, laws, estimate_constants=False)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
    order = torch.Generator().manual_seed(1000 + seed)
    for _ in range(steps):
        idx = torch.randint(0, len(inputs), (batch,), generator=order)
        opt.zero_grad()
        loss = F.cross_entropy(model(inputs[idx].to(device)), labels[idx].to(device))
        loss.backward()
        opt.step()
        monitor.step(lr=lr, loss=float(loss.detach()))
    return monitor

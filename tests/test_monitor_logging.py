"""LawMonitor.log_to: TensorBoard event files (read back with EventAccumulator) and W&B offline runs."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conslaw.errors import ConslawError
from conslaw.monitor import LawMonitor
from conslaw.nn import find_laws


def monitored_run(steps=4, log=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4)).double()
    laws = find_laws(model, torch.randn(4, 3, dtype=torch.float64), "cross_entropy", numeric=False).exact()
    monitor = LawMonitor(model, laws)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor.attach(opt)
    gen = torch.Generator().manual_seed(1)
    logged = []
    for _ in range(steps):
        x, y = torch.randn(8, 3, generator=gen, dtype=torch.float64), torch.randint(0, 4, (8,), generator=gen)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        monitor.set_loss(loss)
        opt.step()
        if log is not None:
            logged.append(monitor.log_to(log))
    return monitor, logged


def expected_scalars(monitor, k):
    """Worst error per family at record k, computed here from relative_errors() and the laws' families."""
    errors = monitor.relative_errors()[k]
    families = [law.family for law in monitor.laws] + ["matrix"] * len(monitor.groups)
    out = {f"conslaw/family/{f}": float(max(e for e, g in zip(errors, families, strict=True) if g == f))
           for f in set(families)}
    return {**out, "conslaw/worst": float(errors.max()), "conslaw/loss": float(monitor.losses[k])}


def test_log_to_tensorboard_event_file_holds_the_scalars_and_histogram(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path))
    monitor, _ = monitored_run(4, writer)
    writer.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    for tag, _ in expected_scalars(monitor, 1).items():
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3, 4]
        np.testing.assert_allclose([e.value for e in events], [expected_scalars(monitor, k)[tag] for k in (1, 2, 3, 4)],
                                   rtol=1e-6)  # TensorBoard stores float32
    histograms = acc.Histograms("conslaw/log10_relative_error")
    assert [h.step for h in histograms] == [1, 2, 3, 4]
    assert histograms[-1].histogram_value.num == len(monitor.columns)
    last = np.log10(np.maximum(monitor.relative_errors()[-1], 1e-18))
    assert histograms[-1].histogram_value.max == pytest.approx(last.max(), rel=1e-6)


class FakeRun:
    """Records what log() receives, as a W&B run's log(data, step=...)."""

    def __init__(self):
        self.calls = []

    def log(self, data, step=None):
        self.calls.append((step, data))


def test_log_to_a_run_with_log_method_and_refuses_others():
    monitor, logged = monitored_run(3, FakeRun())
    run = FakeRun()
    monitor.log_to(run, step=7)
    step, data = run.calls[0]
    assert step == 7
    for tag, value in expected_scalars(monitor, 3).items():
        assert data[tag] == pytest.approx(value, rel=1e-12), tag
    assert all(math.isfinite(v) for v in logged[-1].values())
    with pytest.raises(ConslawError, match="SummaryWriter"):
        monitor.log_to(object())


@pytest.mark.slow
def test_log_to_wandb_offline_writes_run_files(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="conslaw-test", dir=str(tmp_path), mode="offline")
    try:
        monitor, _ = monitored_run(3, run)
    finally:
        run.finish()
    files = list(tmp_path.rglob("*.wandb"))
    assert files and files[0].stat().st_size > 0
    assert monitor.steps == 3

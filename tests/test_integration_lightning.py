"""Lightning: LawMonitorCallback records after every optimizer step, as a plain loop with LawMonitor does."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conslaw.errors import ConslawError
from conslaw.monitor import LawMonitor
from conslaw.nn import find_laws

pl = pytest.importorskip("lightning.pytorch")
from conslaw.integrations.lightning import LawMonitorCallback  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning:lightning.*",
                                       "ignore:.*does not have many workers:UserWarning")

STEPS, BATCH, LR, WD = 20, 4, 0.05, 1e-3


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3)).double()


def data():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS * BATCH, 1, 8, 8, generator=gen, dtype=torch.float64)
    return torch.utils.data.TensorDataset(x, torch.randint(0, 3, (STEPS * BATCH,), generator=gen))


class Module(pl.LightningModule):
    def __init__(self, net, manual=False):
        super().__init__()
        self.net = net
        self.automatic_optimization = not manual

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        if not self.automatic_optimization:
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR, weight_decay=WD)


def fit(callback, tmp_path, manual=False, accumulate=1):
    module = Module(cnn(), manual)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=STEPS // accumulate, callbacks=[callback],
                         logger=pl.loggers.CSVLogger(tmp_path), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                         accumulate_grad_batches=accumulate)
    trainer.fit(module, torch.utils.data.DataLoader(data(), batch_size=BATCH, shuffle=False))
    return module


def plain_loop(laws, accumulate=1):
    net = cnn()
    monitor = LawMonitor(net, laws)
    opt = torch.optim.SGD(net.parameters(), lr=LR, weight_decay=WD)
    monitor.attach(opt)
    for k, (x, y) in enumerate(torch.utils.data.DataLoader(data(), batch_size=BATCH, shuffle=False)):
        loss = F.cross_entropy(net(x), y) / accumulate
        loss.backward()
        if (k + 1) % accumulate == 0:
            monitor.set_loss(loss)
            opt.step()
            opt.zero_grad()
    return monitor


def test_lightning_fit_records_every_step_like_a_plain_loop(tmp_path):
    callback = LawMonitorCallback(laws="auto", loss="cross_entropy")
    module = fit(callback, tmp_path)
    laws = [c.law for c in find_laws(cnn(), data()[:BATCH][0], "cross_entropy", numeric=False).exact()]
    # the same laws, on the LightningModule's parameter names (net.0.weight for 0.weight)
    assert [law.name.replace("net.", "") for law in callback.monitor.laws] == [law.name for law in laws]
    plain = plain_loop(laws)
    assert callback.monitor.steps == STEPS and len(callback.monitor.values) == STEPS + 1
    np.testing.assert_allclose(callback.relative_errors(), plain.relative_errors(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(callback.monitor.values, plain.values, rtol=1e-12)
    assert callback.monitor.Lambda["net.0.weight"] == pytest.approx(plain.Lambda["0.weight"], rel=1e-14) and \
        plain.Lambda["0.weight"] > 0  # weight decay read from the optimizer (Thm 2.1)
    np.testing.assert_allclose(callback.monitor.losses[1:], plain.losses[1:], rtol=1e-12)
    assert 0 < callback.relative_errors()[-1].max() < 0.1
    np.testing.assert_allclose(callback.prop51_bound(), plain.prop51_bound(), rtol=1e-10)
    assert callback.monitor.model is module
    metrics = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    assert "conslaw/worst" in header and "conslaw/family/rescaling" in header
    worst = [float(row.split(",")[header.index("conslaw/worst")]) for row in metrics[1:]
             if row.split(",")[header.index("conslaw/worst")]]
    np.testing.assert_allclose(worst, plain.relative_errors()[1:].max(axis=1), rtol=1e-6)


def test_lightning_grad_accumulation_and_manual_optimization(tmp_path):
    laws = [c.law for c in find_laws(cnn(), data()[:BATCH][0], "cross_entropy", numeric=False).exact()]
    accumulated = LawMonitorCallback(laws=laws, module="net", log=False)
    fit(accumulated, tmp_path / "acc", accumulate=2)
    plain = plain_loop(laws, accumulate=2)
    assert accumulated.monitor.steps == STEPS // 2
    np.testing.assert_allclose(accumulated.relative_errors(), plain.relative_errors(), rtol=0, atol=1e-10)
    with pytest.raises(ConslawError, match="module="):
        fit(LawMonitorCallback(laws=laws), tmp_path / "wrong")  # laws of the inner net, module not given
    manual = LawMonitorCallback(laws=laws, module="net", every_n_steps=5)
    fit(manual, tmp_path / "manual", manual=True)
    assert manual.monitor.steps == STEPS and list(manual.monitor.recorded_steps) == [0, 5, 10, 15, 20]
    np.testing.assert_allclose(manual.relative_errors(), plain_loop(laws).relative_errors()[::5], rtol=0, atol=1e-10)

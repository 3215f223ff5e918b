"""LawMonitor for long runs: scale-aware errors, growable history, every-n-steps, losses, wrappers, devices."""

import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conslaw.errors import ConslawError
from conslaw.history import History
from conslaw.laws import QuadraticLaw
from conslaw.monitor import LawMonitor
from conslaw.nn import find_laws


def classifier(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4)).double()
    with torch.no_grad():
        model[2].bias.zero_()  # as Hugging Face initialises a classifier's bias
    return model


def sgd_steps(model, opt, steps, monitor=None, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(8, 3, generator=gen, dtype=torch.float64), torch.randint(0, 4, (8,), generator=gen)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if monitor is not None:
            monitor.set_loss(loss)
        opt.step()


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_law_starting_at_exactly_zero_has_finite_meaningful_error():
    model = classifier()
    found = find_laws(model, torch.randn(4, 3, dtype=torch.float64), "cross_entropy", numeric=False)
    theta0 = flat(model)
    conserved_at_zero = [c.law for c in found.exact() if float(c.law.value(theta0)) == 0.0]
    assert conserved_at_zero, "the sum of the classifier's zero bias is a translation law (cross entropy)"
    bias = torch.arange(theta0.numel())[-4:]  # the classifier's bias: the last 4 coordinates
    control = QuadraticLaw.build("|b|^2", "|b|^2", ["2.bias"], quad=[(int(i), int(i), 1.0) for i in bias])
    laws = [*conserved_at_zero, control]
    monitor = LawMonitor(model, laws)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor.attach(opt)
    thetas = [theta0]
    for _ in range(5):
        sgd_steps(model, opt, 1)
        thetas.append(flat(model))
    errors = monitor.relative_errors()
    assert np.isfinite(errors).all()
    # terms all exactly 0 at theta_0: the scale is that of the terms on parameters of the model's typical size,
    # sum |c| rho^2 + sum |l| rho with rho the rms of all parameters at theta_0 (independent of later records)
    rho = float(theta0.square().mean().sqrt())
    for j, law in enumerate(conserved_at_zero):
        typical = float(law.quad[2].abs().sum()) * rho ** 2 + float(law.lin[1].abs().sum()) * rho
        assert typical > 0.1 * rho
        expected = [abs(float(law.value(t))) / typical for t in thetas]
        np.testing.assert_allclose(errors[:, j], expected, rtol=1e-6, atol=1e-18)
        assert errors[:, j].max() < 1e-13
    # the control |b|^2 starts at 0 and grows: error |b_k|^2 / (4 rho^2), a real change reads as one
    b2 = np.array([float(t[bias].square().sum()) for t in thetas])
    np.testing.assert_allclose(errors[1:, len(conserved_at_zero)], b2[1:] / (4 * rho ** 2), rtol=1e-12)
    assert errors[-1, len(conserved_at_zero)] > 1e-3
    assert errors[0, len(conserved_at_zero)] == 0.0


def test_every_n_steps_records_the_same_values_at_those_steps_and_losses():
    model = classifier()
    laws = find_laws(model, torch.randn(4, 3, dtype=torch.float64), "cross_entropy", numeric=False).exact()
    every, each = LawMonitor(model, laws, every_n_steps=3), LawMonitor(model, laws)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=0.01)
    every.attach(opt)
    each.attach(opt)
    losses = []
    gen = torch.Generator().manual_seed(3)
    for _ in range(10):
        x, y = torch.randn(8, 3, generator=gen, dtype=torch.float64), torch.randint(0, 4, (8,), generator=gen)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        losses.append(float(loss.detach()))
        every.set_loss(loss)
        each.set_loss(loss)
        opt.step()
    assert list(every.recorded_steps) == [0, 3, 6, 9] and every.steps == each.steps == 10
    np.testing.assert_array_equal(every.values, each.values[[0, 3, 6, 9]])
    np.testing.assert_array_equal(every.corrected, each.corrected[[0, 3, 6, 9]])
    # every scale is fixed at theta_0 (zero-initialised terms: the model's typical size), so the errors agree
    np.testing.assert_array_equal(every.relative_errors(), each.relative_errors()[[0, 3, 6, 9]])
    assert every.Lambda == each.Lambda
    assert each.Lambda["0.weight"] == pytest.approx(-10 * math.log(1 - 0.05 * 0.01), rel=1e-14)
    np.testing.assert_allclose(each.losses[1:], losses, rtol=0)
    np.testing.assert_allclose(every.losses[1:], [losses[2], losses[5], losses[8]], rtol=0)
    np.testing.assert_array_equal(each.last_errors(), each.relative_errors()[-1])
    with pytest.raises(ConslawError, match="every_n_steps"):
        LawMonitor(model, laws, every_n_steps=0)
    # a loss set at a step that is not recorded does not leak into the next record
    manual = LawMonitor(model, laws, every_n_steps=2)
    manual.set_loss(1.5)
    manual.step(lr=0.05)
    manual.step(lr=0.05)
    manual.step(lr=0.05, loss=2.5)
    manual.step(lr=0.05, loss=3.5)
    assert np.isnan(manual.losses[1]) and manual.losses[2] == 3.5


def test_history_grows_by_doubling_and_keeps_rows():
    history = History(3, capacity=2)
    rows = np.arange(3000.0).reshape(1000, 3)
    for row in rows:
        history.append(row)
    assert len(history) == 1000 and history.capacity == 1024
    np.testing.assert_array_equal(history.data, rows)
    with pytest.raises(ValueError):
        history.data[0, 0] = 1.0  # read-only view
    history.set_last(1, -1.0)
    assert history.last()[1] == -1.0


def test_plot_returns_figure_groups_families_and_keeps_backend(tmp_path):
    model = classifier()
    laws = find_laws(model, torch.randn(4, 3, dtype=torch.float64), "cross_entropy", numeric=False).exact()
    monitor = LawMonitor(model, laws)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor.attach(opt)
    sgd_steps(model, opt, 3, monitor)
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        fig = monitor.plot(tmp_path / "laws.png", max_lines=2)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    families = {law.family or "other" for law in laws}
    assert len(monitor.columns) > len(families)
    labels = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert len(labels) == len(families) and all("laws): worst" in label for label in labels)
    assert (tmp_path / "laws.png").stat().st_size > 1000
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), monitor.losses)


class Wrapper:
    """A wrapper holding the optimizer as .optimizer (as Lightning's LightningOptimizer does)."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def step(self, closure=None):
        return self.optimizer.step(closure)

    def zero_grad(self):
        self.optimizer.zero_grad()


def test_attach_unwraps_optimizer_wrappers_and_compiled_modules():
    model = classifier()
    compiled = torch.compile(model, backend="eager")
    found = find_laws(compiled, torch.randn(4, 3, dtype=torch.float64), "cross_entropy", numeric=False)
    laws = [c.law for c in found.exact()]
    assert laws and all(not p.startswith("_orig_mod") for law in laws for p in law.params)
    monitor = LawMonitor(compiled, laws)
    assert monitor.model is model
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapped = Wrapper(Wrapper(opt))
    monitor.attach(wrapped)
    assert monitor.attach(opt) is monitor.attach(wrapped)  # the same optimizer inside
    sgd_steps(compiled, wrapped, 2)
    assert monitor.steps == 2
    np.testing.assert_allclose(monitor.values[-1], [float(law.value(flat(model))) for law in laws], rtol=1e-13)
    with pytest.raises(ConslawError, match=r"torch\.optim\.Optimizer"):
        monitor.attach(object())


def test_attach_to_accelerate_optimizer():
    accelerate = pytest.importorskip("accelerate")
    model = classifier()
    laws = find_laws(model, torch.randn(4, 3, dtype=torch.float64), "cross_entropy", numeric=False).exact()
    monitor = LawMonitor(model, laws)
    accelerator = accelerate.Accelerator(cpu=True)
    wrapped = accelerator.prepare_optimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    monitor.attach(wrapped)
    sgd_steps(model, wrapped, 3)
    assert monitor.steps == 3 and len(monitor.values) == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_monitor_on_cuda_model_matches_cpu_evaluation():
    model = classifier().cuda()
    laws = find_laws(model.cpu(), torch.randn(4, 3, dtype=torch.float64), "cross_entropy", numeric=False).exact()
    model.cuda()
    monitor = LawMonitor(model, laws)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor.attach(opt)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.randn(8, 3, generator=gen, dtype=torch.float64), torch.randint(0, 4, (8,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x.cuda()), y.cuda()).backward()
        opt.step()
    theta = flat(model).cpu()
    np.testing.assert_allclose(monitor.values[-1], [float(law.value(theta)) for law in laws], rtol=1e-12)
    assert monitor.evaluator._device.type == "cuda"
    assert monitor.relative_errors()[-1].max() < 1e-2

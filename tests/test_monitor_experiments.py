"""LawMonitor, flows, data readers and the reproduced claims (small sizes)."""

import json
import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from conslaw import catalog
from conslaw.data.cifar import load_cifar10, write_python_batches
from conslaw.errors import ConslawError
from conslaw.experiments import reproduce
from conslaw.experiments.prop51 import prop51
from conslaw.experiments.small import appR, lr_sweep, regression_problem, thm21
from conslaw.flows import gradient_flow
from conslaw.laws import sum_of_laws
from conslaw.monitor import LawMonitor
from conslaw.nn import find_laws


def mlp_and_laws():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    laws = [entry.law for entry in find_laws(model, torch.randn(4, 3), numeric=False).laws]
    return model, laws


def test_monitor_values_equal_direct_evaluation_and_sgd_error_is_small():
    model, laws = mlp_and_laws()
    monitor = LawMonitor(model, laws)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    monitor.attach(opt)
    x, y = torch.randn(16, 3), torch.randn(16, 2)
    for _ in range(5):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    # round-off of sums of terms ~0.3 (the monitor adds them in another order)
    np.testing.assert_allclose(monitor.values[-1], [float(law.value(theta)) for law in laws], rtol=1e-14, atol=1e-15)
    assert len(monitor.values) == 6
    assert 0 < monitor.relative_errors()[-1].max() < 1e-3


def test_monitor_weight_decay_correction_undoes_pure_decay():
    model, laws = mlp_and_laws()
    monitor = LawMonitor(model, laws, weight_decay=0.1)
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    with torch.no_grad():  # a step with zero gradient: theta <- (1 - lr wd) theta
        for p in model.parameters():
            p.mul_(1 - 0.5 * 0.1)
    monitor.step(lr=0.5)
    assert monitor.relative_errors(corrected=True)[-1].max() < 1e-14
    # every (quadratic) law scales by 0.95^2: error (1 - 0.95^2) |h_0| / max(|h_0|, sum of |terms| at theta_0)
    h0 = np.array([float(law.value(theta0)) for law in laws])
    s0 = np.array([float((law.quad[2] * theta0[law.quad[0]] * theta0[law.quad[1]]).abs().sum()) for law in laws])
    np.testing.assert_allclose(monitor.relative_errors(corrected=False)[-1, :len(laws)],
                               (1 - 0.95 ** 2) * np.abs(h0) / np.maximum(np.abs(h0), s0), rtol=1e-10)


def test_monitor_refuses_laws_of_another_model():
    _, laws = mlp_and_laws()
    with pytest.raises(ConslawError, match="does not have"):
        LawMonitor(nn.Linear(3, 2), laws)


def test_monitor_warns_on_non_finite_values():
    model, laws = mlp_and_laws()
    monitor = LawMonitor(model, laws)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="non-finite"):
        monitor.step(lr=0.1)


def test_gradient_flow_error_shrinks_with_the_solver_tolerance():
    arch = catalog.relu(2, 3, 2)
    _, _, loss = regression_problem(arch, n=16)
    theta0 = arch.space.sample(generator=torch.Generator().manual_seed(0)) * 0.5
    law = sum_of_laws(arch.law_set().laws, "h")
    errors = []
    for tol in (1e-4, 1e-8):
        traj = gradient_flow(loss, theta0, 1.0, rtol=tol, atol=tol * 1e-2, points=5)
        errors.append(abs(float(law.value(torch.from_numpy(traj.thetas[-1]))) - float(law.value(theta0))))
    assert errors[1] < errors[0] / 10


def test_thm21_corrected_law_constant_plain_law_decays():
    result = thm21(quick=True)
    assert result["corrected_max_rel_deviation"] < 1e-9
    assert result["plain_vs_exp_minus_2Lambda"] < 1e-9
    assert result["plain_rel_change"] == pytest.approx(1 - math.exp(-2 * result["Lambda_end"]), rel=1e-6)


def test_lr_sweep_exponents_law_two_control_one():
    result = lr_sweep(quick=True)
    assert 1.7 <= result["exponent_conserved"] <= 2.3
    assert 0.7 <= result["exponent_control"] <= 1.3


def test_prop51_bound_and_decaying_steps():
    result = prop51(quick=True)
    assert all(c["pass"] for c in result["claims"]) and len(result["claims"]) == 3
    assert "max over steps" in result["c_l_definition"] and result["deviations"] == []
    assert result["results"]["decaying"]["max_error_over_bound"] < 1.0


def test_appR_sign_descent():
    result = appR()
    assert result["scalar_abs_law_drift"] < 1e-12 and result["larger_num_laws"] == 0


def test_cifar_reader_parses_the_python_batch_format(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
    write_python_batches(tmp_path, images, np.arange(10) % 10, per_batch=2)
    x, y = load_cifar10(tmp_path)
    assert x.shape == (10, 3, 32, 32) and y.tolist() == list(range(10))
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    assert raw[b"data"].shape == (2, 3072)
    assert abs(float(x[0, 0, 0, 0]) - (images[0, 0, 0, 0] / 255 - 0.4914) / 0.2470) < 1e-5
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConslawError, match="data_batch_3 is missing"):
        load_cifar10(tmp_path)
    with pytest.raises(ConslawError, match=r"batches\.meta is missing"):
        load_cifar10(tmp_path / "nothing")


def test_fig1_quick_runs_resumes_and_trains_on_cifar_format(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)
    write_python_batches(tmp_path / "data", images, np.arange(20) % 10, per_batch=4)
    threads = torch.get_num_threads()
    result = reproduce("fig1", quick=True, data=str(tmp_path / "data"), out=str(tmp_path / "out"))
    assert torch.get_num_threads() == threads  # the quick protocol's one thread is restored afterwards
    keys = {"experiment", "synthetic", "runs", "learning_rates", "seeds", "steps", "exponent_conserved",
            "exponent_control", "figure", "results"}
    assert keys <= set(result) and result["synthetic"] is False and result["runs"] == 6
    assert (tmp_path / "out" / "fig1" / "fig1.png").exists()
    assert 1.7 <= result["exponent_conserved"] <= 2.3
    import conslaw.experiments.fig1 as fig1

    executed = []
    original = fig1.one_run
    fig1.one_run = lambda *a, **k: executed.append(a) or original(*a, **k)
    try:
        again = reproduce("fig1", quick=True, data=str(tmp_path / "data"), out=str(tmp_path / "out"))
        next((tmp_path / "out" / "fig1" / "runs").glob("lr0.001_seed1_*.json")).unlink()
        third = reproduce("fig1", quick=True, data=str(tmp_path / "data"), out=str(tmp_path / "out"))
    finally:
        fig1.one_run = original
    assert len(executed) == 1  # the rerun computed nothing; after one record was removed, exactly that one
    assert (again["runs_computed"], again["runs_reused"]) == (0, 6)
    assert (third["runs_computed"], third["runs_reused"]) == (1, 5)
    assert again["exponent_conserved"] == third["exponent_conserved"] == result["exponent_conserved"]
    saved = json.loads((tmp_path / "out" / "fig1" / "fig1.json").read_text())
    assert saved["runs"] == 6


def test_unknown_experiment_names_the_available_ones():
    with pytest.raises(ConslawError, match="use one of thm21, prop51, sweep, appR, fig1, fig5, all"):
        reproduce("fig9")


def write_imdb(root, reviews):
    for split in ("train", "test"):
        for label, texts in reviews.items():
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i, text in enumerate(texts):
                (folder / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(text)


def test_imdb_reader_parses_the_acl_imdb_folders(tmp_path):
    from conslaw.data.imdb import load_imdb

    write_imdb(tmp_path, {"pos": ["A great, great movie!<br />Loved it.", "great fun"],
                          "neg": ["Awful. Just awful movie", "boring"]})
    ids, labels, vocab = load_imdb(tmp_path, length=6, vocab_size=5)
    assert labels.tolist() == [1, 1, 0, 0] and ids.shape == (4, 6)
    assert vocab[:3] == ["<pad>", "<unk>", "great"]
    assert ids[0].tolist()[:3] == [vocab.index("<unk>"), vocab.index("great"), vocab.index("great")]
    assert ids[3].tolist() == [1, 0, 0, 0, 0, 0]  # "boring" is out of the 5-word vocabulary, then padding
    with pytest.raises(ConslawError, match="train/pos and train/neg are missing"):
        load_imdb(tmp_path / "nothing")


def test_fig5_quick_on_imdb_format_masked_and_unmasked(tmp_path):
    words = [f"w{i}" for i in range(40)]
    rng = np.random.default_rng(0)
    write_imdb(tmp_path / "data", {label: [" ".join(rng.choice(words, 40)) for _ in range(12)]
                                   for label in ("pos", "neg")})
    result = reproduce("fig5", quick=True, data=str(tmp_path / "data"), out=str(tmp_path / "out"))
    assert result["synthetic"] is False and result["runs"] == 24  # float32 and float64
    for key in ("unmasked", "masked"):
        assert 1.7 <= result["by_mask"][key]["exponent_conserved"] <= 2.3
        assert 0.7 <= result["by_mask"][key]["exponent_control"] <= 1.3
    assert (tmp_path / "out" / "fig5" / "fig5.png").exists()


@pytest.mark.parametrize("shape, axis", [((4, 5, 3, 3), 1), ((4, 5, 3, 3), 0), ((6, 7), 1), ((7,), 0),
                                         ((2, 3, 4), 2)])
def test_squared_norms_along_an_axis(shape, axis):
    from conslaw.monitor import squared_norms

    p = torch.randn(*shape, dtype=torch.float32)
    others = [d for d in range(len(shape)) if d != axis]
    expected = p.double().square().sum(dim=others) if others else p.double().square()
    torch.testing.assert_close(squared_norms(p, axis), expected, rtol=1e-12, atol=1e-12)


def test_monitor_exports_table_csv_json_plot_and_frobenius_groups(tmp_path):
    model, laws = mlp_and_laws()
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    monitor = LawMonitor(model, laws, groups={"first two": [0, 1]})
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    for _ in range(3):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        monitor.step(lr=1e-2, loss=float(loss.detach()))
    errors = monitor.relative_errors()
    values = np.array(monitor.values)
    # Frobenius error over the entries' denominators max(|h_0|, sum of |terms| at theta_0)
    s0 = np.array([float((law.quad[2] * theta0[law.quad[0]] * theta0[law.quad[1]]).abs().sum()) for law in laws[:2]])
    frob = np.linalg.norm(values[-1, :2] - values[0, :2]) / np.linalg.norm(np.maximum(np.abs(values[0, :2]), s0))
    assert errors.shape == (4, len(laws) + 1) and errors[-1, -1] == pytest.approx(frob)
    monitor.to_csv(tmp_path / "laws.csv")
    monitor.to_json(tmp_path / "laws.json")
    monitor.plot(tmp_path / "laws.png")
    rows = (tmp_path / "laws.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("step,loss,")
    assert json.loads((tmp_path / "laws.json").read_text())["losses"][1] == pytest.approx(monitor.losses[1])
    assert (tmp_path / "laws.png").stat().st_size > 1000
    bound = monitor.prop51_bound()
    assert bound.shape == (4,) and np.all(np.diff(bound) > 0)

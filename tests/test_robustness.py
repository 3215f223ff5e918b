"""Nothing lost, nothing wrong, nothing run: content-addressed runs, atomic writes, safe data files,
one error path in the CLI, size guards, validated options, a LawMonitor that cannot double-record."""

import json
import math
import os
import pickle
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

import conslaw.io as cio
from _cli import _capture, conslaw  # noqa: F401  (the autouse fixture and the in-process runner)
from conslaw import catalog
from conslaw.cli.common import echo_json
from conslaw.count import count
from conslaw.data.cifar import load_cifar10, write_python_batches
from conslaw.errors import ConslawError
from conslaw.experiments import reproduce
from conslaw.experiments.protocol import RunCache, RunSchema, run_key
from conslaw.laws import balance_law, unit_slot
from conslaw.monitor import LawMonitor
from conslaw.params import ParamSpace
from conslaw.resources import available_memory


def assert_one_line_error(proc, words=""):
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("conslaw: error: ") and "; fix: " in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and words in lines[0], lines[0]


# ---- 1. content-addressed runs -------------------------------------------------------------------------------------

def fake_fig1_run(calls):
    """A stand-in for fig1.one_run: a valid record (law error ~ k lr^2, control ~ k lr) at no cost."""
    def one_run(lr, seed, config, images, labels):
        calls.append((lr, seed, len(images)))
        steps = config["steps"]
        k = np.arange(steps + 1)
        return {"lr": lr, "seed": seed, "errors_law": (k * lr ** 2).tolist(), "errors_control": (k * lr).tolist(),
                "losses": [2.3] * steps, "residual_theta0": 1e-7}
    return one_run


def test_runs_are_reused_only_for_the_same_inputs_and_data(tmp_path, monkeypatch):
    import conslaw.experiments.fig1 as fig1

    calls = []
    monkeypatch.setattr(fig1, "one_run", fake_fig1_run(calls))
    out = str(tmp_path / "out")
    first = reproduce("fig1", quick=True, out=out)
    assert (first["runs_computed"], first["runs_reused"], len(calls)) == (6, 0, 6)
    assert first["synthetic"] and first["exponent_conserved"] == pytest.approx(2.0)
    again = reproduce("fig1", quick=True, out=out)
    assert (again["runs_computed"], again["runs_reused"], len(calls)) == (0, 6, 6)
    # the same protocol on real-format data in the same --out: nothing is reused
    images = np.random.default_rng(1).integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)
    write_python_batches(tmp_path / "data", images, np.arange(20) % 10, per_batch=4)
    real = reproduce("fig1", quick=True, data=str(tmp_path / "data"), out=out)
    assert (real["runs_computed"], real["runs_reused"], len(calls)) == (6, 0, 12)
    assert real["synthetic"] is False and calls[-1][2] == 20
    # a touched data file is other data
    os.utime(tmp_path / "data" / "cifar-10-batches-py" / "data_batch_2", ns=(1, 1))
    assert reproduce("fig1", quick=True, data=str(tmp_path / "data"), out=out)["runs_computed"] == 6
    # a record edited by hand is set aside and computed again
    record = next(p for p in (tmp_path / "out" / "fig1" / "runs").glob("lr0.001_seed0_*.json")
                  if json.loads(p.read_text())["inputs"]["data"].startswith("synthetic"))
    data = json.loads(record.read_text())
    data["result"]["errors_law"][-1] = 1e-30
    record.write_text(json.dumps(data))
    with pytest.warns(RuntimeWarning, match="edited"):
        edited = reproduce("fig1", quick=True, out=out)
    assert (edited["runs_computed"], edited["runs_reused"]) == (1, 5)
    assert len(edited["runs_set_aside"]) == 1 and edited["runs_set_aside"][0].endswith(".json.corrupt")
    saved = json.loads((tmp_path / "out" / "fig1" / "fig1.json").read_text())
    assert saved["runs_computed"] == 1 and saved["exponent_conserved"] == pytest.approx(2.0)


SCHEMA = RunSchema(scalars={"lr": float, "seed": int}, lists={"errors": 4})


def compute_record(calls):
    def compute():
        calls.append(1)
        return {"lr": 0.1, "seed": 0, "errors": [0.0, 1.0, float("nan"), 3.0]}
    return compute


@pytest.mark.parametrize("damage", [
    lambda text: text[: len(text) // 2],                                  # truncated
    lambda text: "{}",
    lambda text: "null",
    lambda text: "",
    lambda text: text.replace('"seed":0', '"seed":"0"'),                 # wrong type
    lambda text: text.replace("[0.0,1.0,null,3.0]", "[0.0,1.0,null]"),   # wrong length (steps + 1)
    lambda text: text.replace("[0.0,1.0,null,3.0]", "[0.0,1.0,null,4.0]"),  # edited value: digest
    lambda text: text.replace('"lr":0.1', '"lr":0.2', 1),                # inputs edited: key mismatch
], ids=["truncated", "empty-object", "null", "empty-file", "wrong-type", "wrong-length", "edited", "other-key"])
def test_invalid_records_are_set_aside_and_recomputed(tmp_path, damage):
    calls = []
    cache = RunCache(tmp_path)
    inputs = {"experiment": "t", "lr": 0.1, "seed": 0, "steps": 3}
    first = cache.run("run", inputs, SCHEMA, compute_record(calls))
    (path,) = tmp_path.glob("run_*.json")
    text = path.read_text().replace(", ", ",").replace(": ", ":")
    path.write_text(damage(text))
    again = RunCache(tmp_path)
    with pytest.warns(RuntimeWarning, match="invalid"):
        second = again.run("run", inputs, SCHEMA, compute_record(calls))
    assert len(calls) == 2 and (again.computed, again.reused) == (1, 0)
    assert (tmp_path / (path.name + ".corrupt")).exists()
    assert math.isnan(second["errors"][2]) and second["errors"][3] == first["errors"][3] == 3.0
    third = RunCache(tmp_path)
    reused = third.run("run", inputs, SCHEMA, compute_record(calls))
    assert (third.computed, third.reused, len(calls)) == (0, 1, 2) and math.isnan(reused["errors"][2])


def test_run_key_changes_with_every_input():
    base = {"experiment": "fig1", "protocol": "quick", "model": {"width": 8}, "data": "synthetic", "lr": 1e-3,
            "seed": 0, "steps": 10, "batch": 16, "dtype": "torch.float32", "version": "0.1.0"}
    keys = {run_key(base)}
    for name, other in [("protocol", "full"), ("model", {"width": 64}), ("data", "cifar10-python:ab"), ("lr", 2e-3),
                        ("seed", 1), ("steps", 50), ("batch", 128), ("dtype", "torch.float64"), ("version", "0.2")]:
        keys.add(run_key({**base, name: other}))
    assert len(keys) == 10 and run_key(dict(reversed(base.items()))) == run_key(base)


# ---- 2. atomic writes ----------------------------------------------------------------------------------------------

def failing_replace(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    cio.atomic_write(target, '{"old": 1}')
    monkeypatch.setattr(cio.os, "replace", failing_replace)
    with pytest.raises(ConslawError, match="No space left"):
        cio.atomic_write(target, '{"new": 2}')
    assert target.read_text() == '{"old": 1}' and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
    monkeypatch.undo()
    cio.atomic_write(target, b'{"new": 2}')
    assert json.loads(target.read_text()) == {"new": 2}


def test_every_writer_goes_through_the_atomic_write(tmp_path, monkeypatch):
    model, laws = two_layer_model_and_laws()
    monitor = LawMonitor(model, laws)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        monitor.step(lr=0.1, loss=float("nan"))
    writers = {"laws.csv": monitor.to_csv, "laws.json": monitor.to_json, "laws.png": monitor.plot,
               "model.pt": lambda p: cio.save_torch(model.state_dict(), p)}
    for name, write in writers.items():
        write(tmp_path / name)
    before = {name: (tmp_path / name).read_bytes() for name in writers}
    assert json.loads(before["laws.json"])["losses"] == [None, None]  # NaN as standard JSON null
    calls = []
    cache = RunCache(tmp_path)
    monkeypatch.setattr(cio.os, "replace", failing_replace)
    monitor.step(lr=0.1, loss=1.0)
    for name, write in writers.items():
        with pytest.raises(ConslawError, match="cannot write"):
            write(tmp_path / name)
        assert (tmp_path / name).read_bytes() == before[name]
    with pytest.raises(ConslawError, match="cannot write"):
        cache.run("run", {"k": 1}, SCHEMA, compute_record(calls))
    assert not list(tmp_path.glob("run_*")) and not list(tmp_path.glob(".*.tmp"))
    monkeypatch.undo()
    rerun = RunCache(tmp_path)
    rerun.run("run", {"k": 1}, SCHEMA, compute_record(calls))
    assert rerun.computed == 1 and len(list(tmp_path.glob("run_*.json"))) == 1
    monitor.to_json(tmp_path / "laws.json")
    assert json.loads((tmp_path / "laws.json").read_text())["losses"] == [None, None, 1.0]


# ---- 3. data files are read, not run -------------------------------------------------------------------------------

class Malicious:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def cifar_folder(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
    write_python_batches(tmp_path, images, np.arange(10) % 10, per_batch=2)
    return tmp_path / "cifar-10-batches-py"


def test_a_pickle_that_runs_code_is_refused_and_not_run(tmp_path):
    root = cifar_folder(tmp_path)
    marker = tmp_path / "MARKER"
    (root / "data_batch_3").write_bytes(pickle.dumps({b"data": Malicious(marker), b"labels": [0]}))
    with pytest.raises(ConslawError, match="asks to load code") as info:
        load_cifar10(tmp_path)
    assert not marker.exists() and "\n" not in str(info.value) and "data_batch_3" in str(info.value)
    proc = conslaw("reproduce", "fig1", "--quick", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--json")
    assert_one_line_error(proc, "asks to load code")
    assert not marker.exists()


@pytest.mark.parametrize("content, words", [
    (lambda good: good[:-40], "not a readable CIFAR-10 python batch"),
    (lambda good: b"not a pickle at all", "not a readable CIFAR-10 python batch"),
    (lambda good: pickle.dumps([1, 2, 3]), "holds a list"),
    (lambda good: pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "shape (N, 3072)"),
    (lambda good: pickle.dumps({b"data": np.zeros((2, 3072)), b"labels": [0, 1]}), "float64 array"),
    (lambda good: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "in 0..9, found 10"),
    (lambda good: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "2 images but 1 labels"),
    (lambda good: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]}), "not a list of int"),
    (lambda good: pickle.dumps({b"pixels": 1}), "no b'data'/b'labels'"),
], ids=["truncated", "garbage", "not-a-dict", "wrong-shape", "wrong-dtype", "label-range", "lengths", "label-type",
        "keys"])
def test_malformed_batches_give_one_line_errors(tmp_path, content, words):
    root = cifar_folder(tmp_path)
    good = (root / "data_batch_2").read_bytes()
    (root / "data_batch_2").write_bytes(content(good))
    with pytest.raises(ConslawError) as info:
        load_cifar10(tmp_path)
    assert words in str(info.value) and "\n" not in str(info.value) and "; fix: " in str(info.value)


def test_the_reader_accepts_numpy_pickles_of_every_protocol(tmp_path):
    root = cifar_folder(tmp_path)
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    for protocol in (2, 3, 4, 5):
        (root / "data_batch_1").write_bytes(pickle.dumps({b"data": data, b"labels": np.array([3, 4])}, protocol))
        x, y = load_cifar10(tmp_path)
        assert x.shape == (10, 3, 32, 32) and y[:2].tolist() == [3, 4]


# ---- 4. one error path in the CLI ----------------------------------------------------------------------------------

MODEL_FILES = {
    "syntax.py": ("def build(:\n", "SyntaxError"),
    "raising.py": ("def build():\n    raise RuntimeError('no GPU here')\n", "RuntimeError: no GPU here"),
    "badimport.py": ("import nosuchpackage_xyz\n\ndef build():\n    pass\n", "No module named 'nosuchpackage_xyz'"),
    "nullbytes.py": ("def build():\n    return 1\x00\n", "null bytes"),
    "dictmodel.py": ("def build():\n    return {'model': 1}\n", "returned dict, expected an nn.Module"),
    "dictout.py": ("import torch\nfrom torch import nn\n\nclass M(nn.Module):\n    def __init__(self):\n"
                   "        super().__init__()\n        self.l = nn.Linear(3, 2)\n\n    def forward(self, x):\n"
                   "        return {'s': float(self.l(x).sum())}\n\ndef build():\n    return M(), torch.randn(4, 3)\n",
                   "returns dict, expected a tensor"),  # a dict with a 'logits' tensor is read (Hugging Face)
    "failing.py": ("import torch\nfrom torch import nn\n\nclass M(nn.Module):\n    def __init__(self):\n"
                   "        super().__init__()\n        self.l = nn.Linear(3, 2)\n\n    def forward(self, x):\n"
                   "        raise ValueError('forward broke')\n\ndef build():\n    return M(), torch.randn(4, 3)\n",
                   "does not run through"),
}


@pytest.mark.parametrize("command", ["laws", "discover", "rebalance"])
@pytest.mark.parametrize("filename", list(MODEL_FILES))
def test_user_model_files_that_fail_give_one_line(tmp_path, filename, command):
    text, words = MODEL_FILES[filename]
    (tmp_path / filename).write_text(text)
    extra = ["--degree", "2"] if command == "discover" else []
    proc = conslaw(command, f"{tmp_path / filename}:build", *extra, "--json")
    assert_one_line_error(proc, words)


@pytest.mark.parametrize("args, words", [
    (["laws", "mlp", "--input-shape", "4,-4"], "size < 1"),
    (["laws", "mlp", "--input-shape", "100000,100000"], "10,000,000,000 entries"),
    (["laws", "mlp", "--input-shape", "2,x3"], "must be an integer"),
    (["laws", ":"], "empty module or function name"),
    (["laws", "os:"], "empty module or function name"),
    (["laws", "--batches", "0", "mlp"], "0 is not in the range x>=1"),
    (["count", "linear", "1e23", "2"], "must be an integer"),
    (["count", "linear", "100000000000000000000000", "2"], "memory"),
    (["count", "relu", "2", "100000000000000000000000", "2", "--bias"], "memory"),
    (["discover", "linear", "2", "2", "2", "--degree", "1e23"], "degree must be an integer"),
    (["discover", "linear", "2", "2", "2", "--degree", "100000000000000000000000"], "monomials"),
    (["discover", "linear", "2", "2", "2", "--degree", "0"], "degree must be an integer >= 1"),
    (["count", "linear", "2", "2", "--rtol", "2"], "rtol must be a number in (0, 1)"),
    (["count", "linear", "2", "2", "--rtol", "nan"], "rtol must be a number in (0, 1)"),
    (["count", "linear", "2", "2", "--max-memory", "-1"], "positive number of GB"),
    (["rebalance", "mlp", "--target", "inf"], "target must be a finite number"),
    (["rebalance", "mlp", "--target", "nan"], "target must be a finite number"),
    (["count", "lstm", "3"], "use one of"),
    (["nosuchcommand"], "No such command"),
])
def test_bad_input_one_line_exit_2_nothing_on_stdout(args, words):
    assert_one_line_error(conslaw(*args, "--json"), words)


@pytest.mark.parametrize("text, suffix, words", [
    ('["a", "b"]', ".json", "cannot read theta"),
    ('{"W1": [1.0]}', ".json", "cannot read theta"),
    ("one two", ".txt", "cannot read theta"),
    ("[[1.0], [2.0, 3.0]]", ".json", "cannot read theta"),
    ("\x93NUMPY garbage", ".npy", "cannot read theta"),
])
def test_bad_theta_files(tmp_path, text, suffix, words):
    path = tmp_path / f"theta{suffix}"
    path.write_text(text)
    assert_one_line_error(conslaw("count", "linear", "1", "1", "1", "--theta", str(path), "--json"), words)


def test_output_paths_are_checked_before_the_work(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    assert_one_line_error(conslaw("reproduce", "fig1", "--quick", "--out", str(tmp_path / "afile" / "out"), "--json"),
                          "is a file, not a folder")
    assert_one_line_error(conslaw("rebalance", "mlp", "--save", str(tmp_path / "missing" / "m.pt"), "--json"),
                          "does not exist")
    assert_one_line_error(conslaw("rebalance", "mlp", "--save", str(tmp_path), "--json"), "is a directory")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cio, "_probe_write", read_only)  # as root, chmod would not stop a write
    assert_one_line_error(conslaw("reproduce", "fig5", "--quick", "--out", str(tmp_path / "ro"), "--json"),
                          "Permission denied")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_output_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert_one_line_error(conslaw("reproduce", "fig1", "--quick", "--out", str(folder), "--json"), "writ")
    finally:
        folder.chmod(0o700)


def test_internal_errors_one_line_and_the_traceback_with_debug(monkeypatch):
    import conslaw.cli.count as cli_count

    def broken(*args, **kwargs):
        raise IndexError("an internal bug")

    monkeypatch.setattr(cli_count, "count", broken)
    proc = conslaw("count", "linear", "2", "2", "--json")
    assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("conslaw: internal error: IndexError: an internal bug; fix: rerun with "
                                   "'conslaw --debug ...' for the traceback and report it")
    proc = conslaw("--debug", "count", "linear", "2", "2", "--json")
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "IndexError: an internal bug" in proc.stderr
    # --debug shows the cause of a user error too; its last line is the same one-line error
    proc = conslaw("--debug", "count", "linear", "2", "0")
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("conslaw: error: linear width #1 (W1) must be >= 1")


def test_json_output_is_standard_nan_is_null(capsys):
    echo_json({"a": float("nan"), "b": [1.0, float("inf")], "c": np.float64("-inf"), "d": np.arange(2)})
    assert json.loads(capsys.readouterr().out) == {"a": None, "b": [1.0, None], "c": None, "d": [0, 1]}


# ---- 5. size guards ------------------------------------------------------------------------------------------------

def test_a_huge_count_is_refused_at_once_with_the_estimate():
    start = time.perf_counter()
    proc = conslaw("count", "linear", "2000", "2000", "2000")
    assert time.perf_counter() - start < 5
    assert_one_line_error(proc, "D = 8,000,000")
    # 2 x D^2 float64 (the engine's basis + the closed forms' Gram matrix) = 931 TiB
    assert "931.5 TiB of memory" in proc.stderr and "--max-memory GB" in proc.stderr and "--block" in proc.stderr
    with pytest.raises(ConslawError, match=r"more than the --max-memory limit \(1\.0 MiB\)"):
        count(catalog.linear(20, 20, 20), max_memory=2**-10)
    assert_one_line_error(conslaw("count", "linear", "20", "20", "20", "--max-memory", "0.001"), "--max-memory limit")
    assert available_memory() > 2**20


# ---- 7. LawMonitor -------------------------------------------------------------------------------------------------

def two_layer_model_and_laws():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False)).double()
    space = ParamSpace.from_module(model)
    laws = [balance_law(f"neuron {k}", [unit_slot(space, "2.weight", 1, k)], [unit_slot(space, "0.weight", 0, k)])
            for k in range(3)]
    return model, laws


def sgd_steps(model, opt, steps):
    x, y = torch.randn(8, 2), torch.randn(8, 2)
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


def test_attach_is_idempotent_and_a_manual_step_cannot_double_record():
    model, laws = two_layer_model_and_laws()
    monitor = LawMonitor(model, laws)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    remove = monitor.attach(opt)
    assert monitor.attach(opt) is remove  # a no-op
    sgd_steps(model, opt, 3)
    assert len(monitor.values) == 4  # one record per step, not two
    with pytest.raises(ConslawError, match="record the same step twice"):
        monitor.step(lr=1e-2)
    with pytest.raises(ConslawError, match="already attached to another optimizer"):
        monitor.attach(torch.optim.SGD(model.parameters(), lr=1e-3))
    remove()
    sgd_steps(model, opt, 1)
    assert len(monitor.values) == 4  # detached: the hook is gone
    monitor.step(lr=1e-2)
    assert len(monitor.values) == 5
    assert monitor.attach(opt) is not remove


def test_weight_decay_correction_per_parameter_group_closed_form():
    """Two groups (lr a, wd l1) and (lr b, wd l2), zero gradients: theta_g,k = (1 - lr_g wd_g)^k theta_g,0, so
    h(theta_k) = q1^{2k} |W1 row|^2 ... in closed form, and h(theta_k e^{Lambda_k}) = h_0 exactly."""
    model, laws = two_layer_model_and_laws()
    (a, l1), (b, l2), steps = (0.1, 0.3), (0.05, 0.1), 4
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": a, "weight_decay": l1},
                           {"params": model[2].parameters(), "lr": b, "weight_decay": l2}])
    w1, w2 = model[0].weight.detach().clone(), model[2].weight.detach().clone()
    monitor = LawMonitor(model, laws)
    with pytest.warns(RuntimeWarning, match="different learning rates"):
        monitor.attach(opt)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
    q1, q2 = 1 - a * l1, 1 - b * l2
    plain = [q2 ** (2 * steps) * w2[:, k].square().sum() - q1 ** (2 * steps) * w1[k].square().sum() for k in range(3)]
    np.testing.assert_allclose(monitor.values[-1], plain, rtol=1e-12)
    assert monitor.Lambda == pytest.approx({"0.weight": -steps * math.log(q1), "2.weight": -steps * math.log(q2)},
                                           rel=1e-14)
    np.testing.assert_allclose(monitor.corrected[-1], monitor.values[0], rtol=1e-12)
    errors = monitor.relative_errors(corrected=True)[-1], monitor.relative_errors(corrected=False)[-1]
    assert errors[0].max() < 1e-12 < errors[1].min()


def test_a_manual_step_reads_the_groups_of_an_optimizer_and_warns_on_untrained_parameters():
    model, laws = two_layer_model_and_laws()
    monitor = LawMonitor(model, laws, weight_decay=0.5)
    opt = torch.optim.SGD(model[0].parameters(), lr=0.1, weight_decay=0.2)
    with pytest.warns(RuntimeWarning) as record:
        with torch.no_grad():
            model[0].weight.mul_(1 - 0.1 * 0.2)
        monitor.step(optimizer=opt)
    messages = " ".join(str(w.message) for w in record)
    assert "does not train 2.weight" in messages and "is ignored with an optimizer" in messages
    assert monitor.Lambda == pytest.approx({"0.weight": -math.log(0.98), "2.weight": 0.0})
    np.testing.assert_allclose(monitor.corrected[-1], monitor.values[0], rtol=1e-13)


def test_find_laws_refuses_a_model_too_large_before_any_work():
    import time

    from torch import nn

    from conslaw import find_laws
    from conslaw.errors import ConslawError

    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))  # D = 4 290: ~0.5 MB to analyse
    start = time.perf_counter()
    with pytest.raises(ConslawError, match=r"D = 4,290 parameters\) would need about .*--max-memory"):
        find_laws(model, torch.randn(4, 64), max_memory=1e-4)
    assert time.perf_counter() - start < 1.0


@pytest.mark.slow  # allocates a 400M-parameter float32 model (1.6 GB)
def test_laws_on_a_400m_parameter_model_refuses_within_5_s():
    import time

    from torch import nn

    from conslaw import find_laws
    from conslaw.errors import ConslawError

    model = torch.nn.utils.skip_init(nn.Linear, 20_000, 20_000, dtype=torch.float32)
    start = time.perf_counter()
    with pytest.raises(ConslawError, match="would need about"):
        find_laws(model, torch.randn(2, 20_000, dtype=torch.float32))
    assert time.perf_counter() - start < 5.0


@pytest.mark.slow  # three quick Figure 1 sweeps in subprocesses
def test_a_sweep_killed_midway_then_rerun_gives_the_uninterrupted_results(tmp_path):
    import signal
    import subprocess

    cmd = [sys.executable, "-m", "conslaw", "reproduce", "fig1", "--quick", "--json"]
    whole = json.loads(subprocess.run([*cmd, "--out", str(tmp_path / "whole")], capture_output=True, text=True,
                                      check=True).stdout)
    runs = tmp_path / "killed" / "fig1" / "runs"
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(runs.glob("*.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(runs.glob("*.json")))
    assert 0 < done_before < whole["runs"]  # killed in the middle of the sweep
    again = json.loads(subprocess.run([*cmd, "--out", str(tmp_path / "killed")], capture_output=True, text=True,
                                      check=True).stdout)
    assert again["runs_reused"] == done_before and again["runs_computed"] == whole["runs"] - done_before
    for key in ("final_error_law", "final_error_control", "exponent_conserved", "exponent_control"):
        assert again[key] == whole[key]

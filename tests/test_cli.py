"""The CLI contract of DESIGN.md: forms, JSON keys, determinism, one-line errors with exit 2."""

import json
import subprocess
import sys

import pytest

from _cli import _capture, conslaw  # noqa: F401  (the autouse fixture and the in-process runner)

CONTRACT_KEYS = {"arch", "D", "lie_dim", "num_laws", "known_laws", "levels", "spectral_gap", "seed", "seconds"}




def test_entry_point_runs_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "conslaw", "count", "linear", "1", "x"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("conslaw: error: width must be an integer")


def count_json(*args):
    proc = conslaw("count", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("args, arch, laws", [
    (["linear", "3", "4", "2"], "linear", 10),
    (["relu", "3", "4", "2", "--bias"], "relu", 4),
    (["conv", "--channels", "2", "3", "2", "--pixels", "6", "--filters", "3", "2", "--stride", "2"], "conv", 3),
    (["attention", "--tokens", "3", "--dim", "2", "--d1", "2", "--fields", "model"], "attention", 6),
    (["attention", "--tokens", "3", "--dim", "4", "--d1", "4", "--heads", "2"], "attention", 12),
    (["softmax", "--classes", "3", "--inputs", "4"], "softmax", 4),
    (["resnet", "--dim", "3", "--width", "2", "--blocks", "2"], "resnet", 4),
    (["linear", "1", "1", "1", "--flow", "sign"], "linear", 1),
])
def test_every_count_form_gives_the_contract_keys_and_the_paper_count(args, arch, laws):
    data = count_json(*args)
    assert CONTRACT_KEYS <= set(data)
    assert data["arch"] == arch and data["num_laws"] == laws == data["D"] - data["lie_dim"]


def test_same_seed_same_json_except_timings():
    a = count_json("attention", "--tokens", "3", "--dim", "2", "--d1", "2", "--seed", "5")
    b = count_json("attention", "--tokens", "3", "--dim", "2", "--d1", "2", "--seed", "5")
    a.pop("seconds"), b.pop("seconds")
    assert a == b and a["seed"] == 5


def test_one_json_object_on_stdout():
    proc = conslaw("count", "relu", "2", "3", "2", "--json", "--show-laws")
    data = json.loads(proc.stdout)
    assert len(data["laws"]) == 3 and data["laws"][0]["formula"] == "|W2[:,0]|^2 - |W1[0,:]|^2"


@pytest.mark.parametrize("args, words", [
    (["count", "linear", "3", "0", "2"], "must be >= 1"),
    (["count", "linear", "3", "2.5", "2"], "must be an integer"),
    (["count", "relu", "3", "-1", "2"], "must be >= 1"),
    (["count", "attention", "--tokens", "3", "--dim", "2", "--d1", "3", "--heads", "2"], "do not divide"),
    (["count", "conv", "--channels", "1", "2", "1", "--pixels", "4", "--filters", "5", "2"], "longer than"),
    (["count", "lstm", "3"], "use one of attention, conv, linear, relu, resnet, softmax, transformer"),
    (["count", "softmax", "--classes", "3", "--inputs", "2", "--fields", "reparam"], "use --fields model"),
    (["count", "linear", "3"], "at least two widths"),
])
def test_bad_input_gives_one_line_exit_2_no_traceback(args, words):
    proc = conslaw(*args)
    assert proc.returncode == 2
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_nan_theta_is_refused(tmp_path):
    path = tmp_path / "theta.json"
    path.write_text("[1.0, NaN]")
    proc = conslaw("count", "linear", "1", "1", "1", "--theta", str(path))
    assert proc.returncode == 2 and "non-finite" in proc.stderr and "W2[0,0]" in proc.stderr


def test_given_theta_is_used(tmp_path):
    # (u, v) = (1, 1): balanced, still one law |u|^2 - |v|^2
    path = tmp_path / "theta.txt"
    path.write_text("1.0 1.0")
    data = count_json("linear", "1", "1", "1", "--theta", str(path))
    assert data["num_laws"] == 1 and data["D"] == 2


def test_tour_reproduces_every_claim():
    proc = conslaw("tour", "--json")
    data = json.loads(proc.stdout)
    # the paper's numbers, in the order of conslaw.claims.CLAIMS (written here, not read from the code)
    paper = [10, 6, 4, 5, 7, 3, 3, 6, 20, 12, 4, 4, 4, 2, 6, 0, 3, 1, 0]
    assert [row["num_laws"] for row in data["claims"]] == paper
    assert [row["known_laws"] for row in data["claims"]] == [*paper[:16], 2, 1, None]
    # named laws == the engine's count on the built-in models (mlp 13, cnn 15, resnet blocks 13, attention 51)
    assert [(row["named_laws"], row["engine_laws"]) for row in data["models"]] == \
        [(13, 13), (15, 15), (13, 13), (13, 13), (51, 51)]
    assert data["all_pass"]


def test_count_block_option():
    data = count_json("resnet", "--dim", "3", "--width", "2", "--blocks", "3", "--block", "V2,U1")
    assert data["num_laws"] == 0 and data["block"] == ["U1", "V2"] and data["D"] == 12 and data["network_D"] == 36


def test_discover_gives_the_contract_keys_and_the_laws():
    proc = conslaw("discover", "relu", "3", "2", "2", "--bias", "--degree", "2", "--json")
    data = json.loads(proc.stdout)
    assert {"D", "degree", "num_laws", "lie_laws", "complete", "laws"} <= set(data)
    assert data["num_laws"] == data["lie_laws"] == 2 and data["complete"] is True
    assert data["laws"][0]["formula"] == "|W1[0,:]|^2 + b1[0]^2 - |W2[:,0]|^2"
    assert data["laws"][0]["latex"].startswith("W1_{0,0}^{2} + W1_{0,1}^{2}")


def test_discover_reports_an_incomplete_certificate():
    proc = conslaw("discover", "resnet", "--dim", "1", "--width", "1", "--blocks", "2", "--degree", "2",
                   "--init", "positive")
    assert proc.returncode == 0 and "incomplete: 2 polynomial laws" in proc.stdout


def test_discover_refuses_a_too_large_system():
    proc = conslaw("discover", "linear", "30", "30", "30", "--degree", "3")
    assert proc.returncode == 2 and "GiB" in proc.stderr and "fix:" in proc.stderr


def test_laws_list_and_json_contract():
    proc = conslaw("laws", "--list")
    assert "resnet18-cifar" in proc.stdout and "transformer" in proc.stdout
    proc = conslaw("laws", "mlp", "--json")
    data = json.loads(proc.stdout)
    assert {"model", "D", "laws", "uncovered_params", "named_laws", "numeric_laws"} <= set(data)
    assert data["named_laws"] == data["numeric_laws"] == 13
    assert {"name", "kind", "formula", "params", "count", "verified", "approximate", "max_residual"} <= \
        set(data["laws"][0])


def test_laws_of_a_model_in_a_file(tmp_path):
    path = tmp_path / "mymodel.py"
    path.write_text("import torch\nfrom torch import nn\n\ndef build():\n"
                    "    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), torch.randn(4, 3)\n")
    data = json.loads(conslaw("laws", f"{path}:build", "--json").stdout)
    assert data["named_laws"] == data["numeric_laws"] == 4


@pytest.mark.parametrize("args, words", [
    (["laws", "nosuchmodel"], "unknown model"),
    (["laws", "missing.py:build"], "does not exist"),
    (["laws", "mlp", "--input-shape", "2,7"], "does not run"),
])
def test_laws_bad_input(args, words):
    proc = conslaw(*args)
    assert proc.returncode == 2 and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_discover_a_model_from_a_file(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text("import torch\nfrom torch import nn\n\ndef build():\n"
                    "    return nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)), torch.randn(4, 2)\n")
    data = json.loads(conslaw("discover", f"{path}:build", "--degree", "2", "--json").stdout)
    assert data["num_laws"] == data["lie_laws"] == 3 and data["complete"] is True
    assert data["laws"][0]["formula"] == "|0.weight[0,:]|^2 + 0.bias[0]^2 - |2.weight[:,0]|^2"


def test_laws_of_a_model_in_a_package_module(tmp_path, monkeypatch):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text("import torch\nfrom torch import nn\n\ndef small():\n"
                                     "    return nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)), "
                                     "torch.randn(4, 2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = json.loads(conslaw("laws", "mypkg.nets:small", "--json").stdout)
    assert data["model"] == "small" and data["named_laws"] == data["numeric_laws"] == 3


def test_rebalance_command(tmp_path):
    data = json.loads(conslaw("rebalance", "cnn", "--json", "--save", str(tmp_path / "cnn.pt")).stdout)
    assert data["max_error_after"] < 1e-12 < data["max_error_before"] and data["max_output_change"] < 1e-12
    assert (tmp_path / "cnn.pt").exists()


@pytest.mark.parametrize("norm, first", [
    ("nn.BatchNorm1d(3)", "0.bias[0]"),             # cancelled by the BatchNorm mean: zero gradient
    ("nn.LayerNorm(3)", "sum(0.weight[:,0])"),      # a shift of all features is removed by LayerNorm
])
def test_discover_finds_the_normalization_laws_of_a_small_model(tmp_path, norm, first):
    path = tmp_path / "normed.py"
    path.write_text("import torch\nfrom torch import nn\n\ndef build():\n    torch.manual_seed(0)\n"
                    f"    return nn.Sequential(nn.Linear(2, 3), {norm}, nn.ReLU(), nn.Linear(3, 2)), "
                    "torch.randn(8, 2)\n")
    data = json.loads(conslaw("discover", f"{path}:build", "--degree", "2", "--json").stdout)
    formulas = [law["formula"] for law in data["laws"]]
    assert data["num_laws"] == data["lie_laws"] == 6 and data["complete"] is True
    assert formulas[0] == first
    assert "1.weight[0]^2 + 1.bias[0]^2 - |3.weight[:,0]|^2" in formulas  # the affine rescaling law


def test_reproduce_command_json(tmp_path):
    data = json.loads(conslaw("reproduce", "appR", "--quick", "--out", str(tmp_path), "--json").stdout)
    assert data["experiment"] == "appR" and all(c["pass"] for c in data["claims"])
    proc = conslaw("reproduce", "fig9")
    assert proc.returncode == 2 and "unknown experiment 'fig9'" in proc.stderr

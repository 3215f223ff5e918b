"""The reference notebook's two 50-network suites: every count matches the known laws."""

import numpy as np

from conslaw.bench import anchor_suite, run_suite


def notebook_loop(kind):
    """The reference notebook's loops (parts C and D), with its global-RNG side draws."""
    np.random.seed(0)
    nets = []
    for _ in range(50):
        depth = np.random.randint(2, 5)
        list_dim = np.empty(depth + 1, dtype=int)
        for j in range(depth + 1):
            list_dim[j] = np.random.randint(2, 6 if kind == "linear" else 10)
        list_dim = [int(v) for v in list_dim]
        D = int(np.array(list_dim)[:-1] @ np.array(list_dim)[1:].T)
        if kind == "linear":
            np.random.rand(D)  # known_conserved_functions_linear
            np.random.rand(D)  # dim_trace_lie_algebra
            nets.append((list_dim, False))
        else:
            bias = np.random.random() < 0.5
            np.random.rand(D + (sum(list_dim[1:-1]) if bias else 0))  # dim_trace_lie_algebra
            nets.append((list_dim, bias))
    return nets


def test_suites_are_sampled_like_the_reference_notebook():
    linear = anchor_suite("linear")
    relu = anchor_suite("relu")
    assert len(linear) == len(relu) == 50
    assert [(n.widths[::-1], n.bias) for n in linear] == notebook_loop("linear")
    assert [(n.widths[::-1], n.bias) for n in relu] == notebook_loop("relu")
    assert linear[0].widths == [2, 3, 5]  # reversed: the notebook lists the output first
    assert all(2 <= len(n.widths) - 1 <= 4 and all(2 <= w <= 5 for w in n.widths) for n in linear)
    assert all(2 <= len(n.widths) - 1 <= 4 and all(2 <= w <= 9 for w in n.widths) for n in relu)
    assert 10 < sum(n.bias for n in relu) < 40


def test_linear_suite_all_fifty_match():
    result = run_suite("linear")
    assert result["nets"] == 50 and result["matched"] == 50
    assert sum(n["num_laws"] for n in result["networks"]) == sum(n["known_laws"] for n in result["networks"])


def test_relu_suite_all_fifty_match():
    result = run_suite("relu")
    assert result["nets"] == 50 and result["matched"] == 50
    assert all(n["num_laws"] == sum(n["widths"][1:-1]) for n in result["networks"])

"""Notebook display: LaTeX of formulas, HTML tables of laws, readable reprs, help() texts."""

import pydoc
import re

import torch
from torch import nn

import conslaw
from conslaw.display import MAX_ROWS, formula_latex, truncate
from conslaw.laws import sum_of_laws


def test_formula_latex_typesets_norms_inner_products_sums_and_names():
    assert formula_latex("|2.weight[:,0]|^2 - |0.weight[0,:]|^2 - 0.bias[0]^2") == (
        r"\lVert \texttt{2.weight}[:,0] \rVert^2 - \lVert \texttt{0.weight}[0,:] \rVert^2 - \texttt{0.bias}[0]^2")
    assert formula_latex("<Q[0,:], Q[1,:]> - <K[0,:], K[1,:]>") == (
        r"\langle \texttt{Q}[0,:], \texttt{Q}[1,:] \rangle - \langle \texttt{K}[0,:], \texttt{K}[1,:] \rangle")
    assert formula_latex("sum(W_a[:,2]) + 0.5*b_1[3] - 1e-05*x[0]") == (
        r"\textstyle\sum(\texttt{W\_a}[:,2]) + 0.5\,\texttt{b\_1}[3] - 1e-05\,\texttt{x}[0]")


def test_truncate_cuts_at_a_term_boundary_and_counts_the_rest():
    terms = [f"|w{i}[:,0]|^2" for i in range(97)]
    formula = " + ".join(terms)
    cut = truncate(formula, 160)
    kept = cut.split(" + ... (")[0]
    assert len(kept) <= 160 and formula.startswith(kept)
    n_kept = kept.count(" + ") + 1
    assert cut.endswith(f"({97 - n_kept} more terms)")
    assert truncate("a[0]^2", 160) == "a[0]^2"


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_results_show_as_html_tables_and_readable_reprs():
    found = conslaw.find_laws(mlp(), torch.randn(4, 3), numeric=False)
    html = found._repr_html_()
    rows = re.findall(r"<tr>", html)
    assert len(rows) == len(found.laws) + 1  # header + one per law
    for c in found.laws:
        assert f"{c.max_residual:.1e}" in html and c.status in html
    assert r"$\lVert \texttt{2.weight}[:,0] \rVert^2" in html
    assert found.laws[0].law._repr_latex_().startswith("$") and found.laws[0].law._repr_latex_().endswith("$")
    counted = conslaw.count(conslaw.catalog.linear(3, 4, 2))
    assert "10 conservation laws" in counted._repr_html_()
    discovered = conslaw.discover(conslaw.catalog.linear(2, 2, 1).fields(), 2)
    assert f"{discovered.num_laws} polynomial laws" in discovered._repr_html_()
    assert discovered._repr_html_().count("$") == 2 * discovered.num_laws
    monitor = conslaw.LawMonitor(mlp(), found.exact())
    for obj in (found, counted, discovered, discovered.laws, monitor, found.laws[0], counted.arch, monitor.evaluator):
        assert " at 0x" not in repr(obj) and len(repr(obj)) < 400, repr(obj)


def test_long_tables_and_formulas_are_cut():
    found = conslaw.find_laws(nn.Sequential(nn.Linear(3, 40), nn.ReLU(), nn.Linear(40, 2)), torch.randn(4, 3),
                              numeric=False)
    assert len(found.laws) > MAX_ROWS
    assert f"... {len(found.laws) - MAX_ROWS} more laws" in found._repr_html_()
    total = sum_of_laws([c.law for c in found.exact()], "all units", " + ".join(c.law.formula for c in found.laws))
    assert len(total.formula) > 1000 and len(repr(total)) < 260 and "more terms)" in repr(total)
    assert len(total._repr_latex_()) < 600


def test_help_shows_real_docstrings():
    for obj, words in ((conslaw.find_laws, ["Prop 2.3", "Thm 2.11", "example_input"]),
                       (conslaw.LawMonitor, ["every_n_steps", "Thm 2.1", "relative_errors", "attach"])):
        text = pydoc.render_doc(obj)
        assert "see the module docstring" not in text
        assert all(word in text for word in words), (obj, words)

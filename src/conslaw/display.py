"""Notebook display: laws as LaTeX, collections of laws as HTML tables (Jupyter's ``_repr_html_`` /
``_repr_latex_``), long formulas cut at a term boundary.

:func:`formula_latex` turns the readable formulas of :mod:`conslaw.laws.formula`
(``|W2[:,3]|^2 - |W1[3,:]|^2 - b1[3]^2``, ``<Q[0,:], Q[1,:]> - <K[0,:], K[1,:]>``, ``sum(W[:,2])``) into
LaTeX (``\\lVert \\texttt{W2}[:,3] \\rVert^2 - ...``); discovered laws carry sympy's LaTeX already.
Tables show at most :data:`MAX_ROWS` laws (then how many more) and formulas of at most
:data:`MAX_FORMULA` characters.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from typing import Any

#: laws shown in a table before "... N more"
MAX_ROWS = 30
#: characters of a formula shown before it is cut at a term boundary
MAX_FORMULA = 160

_NUMBER = re.compile(r"\d+(\.\d+)?(e[+-]?\d+)?(?![\w.])")
_NAME = re.compile(r"[\w.]+")
_TEXTTT_ESCAPES = {"_": r"\_", "%": r"\%", "#": r"\#", "&": r"\&", "$": r"\$", "{": r"\{", "}": r"\}"}
_FUNCTIONS = {"sum": r"\textstyle\sum", "exp": r"\exp", "log": r"\log"}


def truncate(formula: str, limit: int = MAX_FORMULA) -> str:
    """``formula`` cut before ``limit`` characters at a `` + `` / `` - `` between terms, with ``+ ... (N more
    terms)``; unchanged when short enough."""
    if len(formula) <= limit:
        return formula
    cuts = [m.start() for m in re.finditer(r" [+-] ", formula)]
    kept = [c for c in cuts if c <= limit] or [limit]
    cut = kept[-1]
    more = sum(1 for c in cuts if c >= cut)
    return f"{formula[:cut]} + ... ({more} more terms)" if more else f"{formula[:cut]} ..."


def formula_latex(formula: str) -> str:
    """LaTeX of a readable formula (module docstring); names in ``\\texttt``, norms and inner products typeset."""
    out, bars, i = [], 0, 0
    while i < len(formula):
        ch = formula[i]
        number = _NUMBER.match(formula, i)
        if number:
            out.append(number.group(0))
            i = number.end()
            continue
        match = _NAME.match(formula, i)
        if match:
            name = match.group(0)
            if name in _FUNCTIONS and formula[match.end():match.end() + 1] == "(":
                out.append(_FUNCTIONS[name])
            else:
                out.append(r"\texttt{" + "".join(_TEXTTT_ESCAPES.get(c, c) for c in name) + "}")
            i = match.end()
            continue
        if ch == "|":
            out.append(r"\lVert " if bars % 2 == 0 else r" \rVert")
            bars += 1
        elif ch == "<":
            out.append(r"\langle ")
        elif ch == ">":
            out.append(r" \rangle")
        elif ch == "*":
            out.append(r"\,")
        elif ch in "{}":
            out.append("\\" + ch)
        elif formula.startswith("...", i):
            out.append(r"\dots")
            i += 3
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def law_latex(law: Any, limit: int = MAX_FORMULA) -> str:
    """The law's LaTeX (its own, else from its formula), its formula cut to ``limit`` characters first."""
    if getattr(law, "latex", "") and len(law.latex) <= 2 * limit:
        return law.latex
    return formula_latex(truncate(law.formula, limit))


def _cell(text: Any) -> str:
    return f"<td style='text-align:left'>{html.escape(str(text))}</td>"


def laws_table(rows: Sequence[dict], caption: str, columns: Iterable[str] = ("name", "formula"),
               max_rows: int = MAX_ROWS) -> str:
    """An HTML table of laws: ``rows`` of {"name", "latex", "status", "residual", ...}; the ``formula`` column
    shows ``$latex$`` (typeset by the notebook's MathJax), residuals in scientific notation."""
    columns = list(columns)
    head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows[:max_rows]:
        cells = []
        for c in columns:
            if c == "formula":
                cells.append(f"<td style='text-align:left'>${html.escape(row['latex'])}$</td>")
            elif c == "residual" and isinstance(row.get(c), float):
                cells.append(_cell(f"{row[c]:.1e}"))
            else:
                cells.append(_cell("" if row.get(c) is None else row[c]))
        body.append("<tr>" + "".join(cells) + "</tr>")
    if len(rows) > max_rows:
        body.append(f"<tr><td colspan='{len(columns)}'>... {len(rows) - max_rows} more laws</td></tr>")
    return (f"<table><caption style='text-align:left'>{html.escape(caption)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def law_rows(laws: Iterable[Any]) -> list[dict]:
    """Table rows of laws or checked laws (status and residual when checked)."""
    rows = []
    for entry in laws:
        law = getattr(entry, "law", entry)
        rows.append({"name": law.name, "latex": law_latex(law), "family": law.family,
                     "status": getattr(entry, "status", None), "residual": getattr(entry, "max_residual", None)})
    return rows

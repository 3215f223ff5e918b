"""``conslaw tour``: every paper claim counted, and built-in models named vs counted."""

from __future__ import annotations

import click

from .common import CONTEXT, JSON_OPTION, echo_json


@click.command("tour", context_settings=CONTEXT)
@JSON_OPTION
def tour_cmd(as_json):
    """Count every catalog block and built-in model, and compare with the paper's theorems."""
    from ..tour import run_tour

    result = run_tour(progress=not as_json)
    rows = result["claims"] + result["models"]
    if as_json:
        echo_json({**result, "all_pass": all(r["pass"] for r in rows)})
        return
    click.echo(f"{'block':44s} {'D':>5s} {'laws':>5s} {'known':>5s} {'paper':>5s}  {'claim':48s} result")
    for r in result["claims"]:
        click.echo(f"{r['label']:44s} {r['D']:5d} {r['num_laws']:5d} {r['known_laws']!s:>5s} "
                   f"{r['paper']!s:>5s}  {r['claim']:48s} {'PASS' if r['pass'] else 'FAIL'}")
    click.echo(f"\n{'model':44s} {'D':>5s} {'named':>5s} {'engine':>6s}  {'check':47s} result")
    for r in result["models"]:
        click.echo(f"{r['label']:44s} {r['D']:5d} {r['named_laws']:5d} {r['engine_laws']!s:>6s}  "
                   f"{r['claim']:47s} {'PASS' if r['pass'] else 'FAIL'}")
    click.echo(f"{sum(r['pass'] for r in rows)}/{len(rows)} checks reproduced "
               f"({len(result['claims'])} paper claims, {len(result['models'])} models named vs engine)")

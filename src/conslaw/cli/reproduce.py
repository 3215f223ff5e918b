"""``conslaw reproduce EXPERIMENT``: the paper's claims and figures, with a claim / paper / measured table."""

from __future__ import annotations

import click

from .common import CONTEXT, JSON_OPTION, echo_json


@click.command("reproduce", context_settings=CONTEXT)
@click.argument("experiment")
@click.option("--quick", is_flag=True, help="reduced sizes (narrow ResNet, fewer seeds and steps)")
@click.option("--data", default=None, type=click.Path(file_okay=False), help="dataset folder (else SYNTHETIC data)")
@click.option("--out", default="results", show_default=True, type=click.Path(file_okay=False))
@JSON_OPTION
def reproduce_cmd(experiment, quick, data, out, as_json):
    """Reproduce a claim or figure of the paper: thm21, prop51, sweep, appR, fig1, fig5, all."""
    from ..experiments import reproduce

    result = reproduce(experiment, quick=quick, data=data, out=out)
    if as_json:
        echo_json(result)
        return
    for claim in result["claims"]:
        click.echo(f"{claim['claim']:58s} paper: {claim['paper']:28s} measured: {claim['measured']:34s} "
                   f"{'PASS' if claim['pass'] else 'FAIL'}")
    if "figure" in result:
        click.echo(f"figure: {result['figure']}   results: {result['results']}"
                   + ("   (SYNTHETIC data)" if result.get("synthetic") else ""))

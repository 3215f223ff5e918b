"""``conslaw reproduce EXPERIMENT``: the paper's claims and figures, with a claim / paper / measured table.

Exit status: 0 when every claim passes, 1 when any claim FAILs (the failing claims are listed last,
after the table, on stdout; with ``--json`` the JSON object is printed first, then the exit status
is 1 all the same). User errors keep the one error path (exit 2).
"""

from __future__ import annotations

import sys

import click

from .common import CONTEXT, JSON_OPTION, echo_json, progress_wanted


def claim_line(claim: dict) -> str:
    """One row of the claims table."""
    return (f"{claim['claim']:58s} paper: {claim['paper']:28s} measured: {claim['measured']:34s} "
            f"{'PASS' if claim['pass'] else 'FAIL'}")


def protocol_lines(result: dict) -> list[str]:
    """The protocol record and the deviations of every experiment in ``result`` (one or ``all``)."""
    from ..experiments.fidelity import describe

    parts = result["results"].values() if result.get("experiment") == "all" else [result]
    return [line for part in parts for line in describe(part)]


@click.command("reproduce", context_settings=CONTEXT)
@click.argument("experiment")
@click.option("--quick", is_flag=True, help="reduced sizes (narrow ResNet, fewer seeds and steps)")
@click.option("--data", default=None, type=click.Path(file_okay=False), help="dataset folder (else SYNTHETIC data)")
@click.option("--out", default="results", show_default=True, type=click.Path(file_okay=False))
@click.option("--law", type=click.Choice(["eq17", "bn-exact"]), default=None,
              help="fig1: the tracked function: eq. (17) summed over the first block (default, the paper's) or the "
                   "exact BatchNorm law")
@click.option("--norm", type=click.Choice(["bn", "none"]), default=None,
              help="fig1: ResNet-18 with BatchNorm (default, the paper's) or without normalization (eq. 17 exact)")
@click.option("--device", default=None, help="fig1, fig5: torch device of the training runs (cpu, cuda); default cpu")
@click.option("--threads", type=int, default=None, help="fig1, fig5: torch threads (default: torch's)")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="fig1, fig5: run the (lr, seed) runs here one after the other (default), or as Ray tasks")
@click.option("--ray-address", default=None, help="with --executor ray: the cluster's address (default: a local Ray)")
@JSON_OPTION
def reproduce_cmd(experiment, quick, data, out, law, norm, device, threads, executor, ray_address, as_json):
    """Reproduce a claim or figure of the paper: thm21, prop51, sweep, appR, fig1, fig5, all.

    Exits 1 when any claim fails (the failing claims are listed last).
    """
    from ..experiments import reproduce

    if ray_address and executor != "ray":
        from ..errors import ConslawError
        raise ConslawError("--ray-address without --executor ray", "add --executor ray")
    result = reproduce(experiment, quick=quick, data=data, out=out, law=law, norm=norm, device=device,
                       threads=threads, executor=executor, ray_address=ray_address,
                       progress=progress_wanted(as_json))
    failed = [c for c in result["claims"] if not c["pass"]]
    if as_json:
        echo_json(result)
    else:
        for line in protocol_lines(result):
            click.echo(line)
        for claim in result["claims"]:
            click.echo(claim_line(claim))
        if "figure" in result:
            click.echo(f"figure: {result['figure']}   results: {result['results']}"
                       + ("   (SYNTHETIC data)" if result.get("synthetic") else ""))
        if failed:
            click.echo(f"FAILED: {len(failed)} of {len(result['claims'])} claims")
            for claim in failed:
                click.echo("  " + claim_line(claim))
    if failed:
        sys.stdout.flush()
        sys.exit(1)

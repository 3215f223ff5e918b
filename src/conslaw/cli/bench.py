"""``conslaw bench``: the reference notebook's suites, timed."""

from __future__ import annotations

import click

from .common import CONTEXT, JSON_OPTION, echo_json


@click.group("bench", context_settings=CONTEXT)
def bench_cmd():
    """Benchmarks against the reference implementation."""


@bench_cmd.command("anchor-suites", context_settings=CONTEXT)
@JSON_OPTION
def bench_anchor(as_json):
    """The reference notebook's 50 linear and 50 ReLU networks: num_laws == known_laws?"""
    from ..bench import anchor_suites

    print_suites(anchor_suites(progress=not as_json), as_json)


@bench_cmd.command("discover-suites", context_settings=CONTEXT)
@JSON_OPTION
def bench_discover(as_json):
    """The reference notebook's two 10-network degree-2 suites: laws found == known laws?"""
    from ..bench import discover_suites

    print_suites(discover_suites(progress=not as_json), as_json)


def print_suites(result: dict, as_json: bool) -> None:
    """One line per suite, or the JSON object."""
    if as_json:
        echo_json(result)
        return
    for name, suite in result["suites"].items():
        click.echo(f"{name:7s} {suite['matched']}/{suite['nets']} matched in {suite['seconds']:.2f} s")
    click.echo(f"(one-time warm-up of torch.func: {result['warmup_seconds']:.2f} s, not included)")

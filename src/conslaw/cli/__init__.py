"""Command-line interface: ``conslaw count | discover | laws | rebalance | reproduce | bench | tour``.

One module per command, formatting and argument parsing only (DESIGN.md's CLI
contract). ``--json`` prints exactly one JSON object on stdout; progress and
logs go to stderr. Bad input prints one line ``conslaw: error: ...; fix: ...``
and exits with 2.
"""

from __future__ import annotations

import sys

import click

from ..errors import ConslawError
from .bench import bench_cmd
from .common import CONTEXT
from .count import count_cmd
from .discover import discover_cmd
from .laws import laws_cmd
from .rebalance import rebalance_cmd
from .reproduce import reproduce_cmd
from .tour import tour_cmd


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="conslaw")
def main():
    """conslaw: conservation laws of neural-network training (Marcotte, Gribonval, Peyre, ICML 2025)."""


for _command in (count_cmd, discover_cmd, laws_cmd, rebalance_cmd, reproduce_cmd, bench_cmd, tour_cmd):
    main.add_command(_command)


def run() -> None:
    """Entry point: one-line errors with exit status 2 for bad input."""
    try:
        main.main(standalone_mode=False)
    except ConslawError as exc:
        click.echo(f"conslaw: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("conslaw: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        fix = f"; fix: see '{exc.ctx.command_path} --help'" if exc.ctx is not None else "; fix: see 'conslaw --help'"
        if exc.ctx is not None and isinstance(exc.ctx.command, click.Group) and "No such command" in exc.message:
            fix = f"; fix: use one of {', '.join(exc.ctx.command.list_commands(exc.ctx))}"
        click.echo(f"conslaw: error: {exc.format_message()}{fix}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"conslaw: error: {exc.format_message()}; fix: see 'conslaw --help'", err=True)
        sys.exit(exc.exit_code)


__all__ = ["main", "run"]

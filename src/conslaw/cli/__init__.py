"""Command-line interface: ``conslaw count | discover | laws | rebalance | reproduce | bench | tour``.

One module per command, formatting and argument parsing only (DESIGN.md's CLI
contract). ``--json`` prints exactly one JSON object on stdout; progress and
logs go to stderr.

One error path: every failure a user can cause (bad arguments, click usage
errors, unreadable or malicious files, a model file that does not import or
build or run, a job too large for the memory, a folder that cannot be written)
ends in one line on stderr, ``conslaw: error: ...; fix: ...``, exit status 2,
and nothing on stdout (with ``--json`` too). Anything else is an internal bug:
one line ``conslaw: internal error: ...`` with exit status 1, and the full
traceback with the global ``--debug`` flag (``conslaw --debug COMMAND ...``, or
``CONSLAW_DEBUG=1``), which also shows the traceback behind a user error.
Warnings are printed as ``conslaw: warning: ...`` lines on stderr.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings

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

#: set by ``--debug`` (or CONSLAW_DEBUG=1) for the current invocation
_STATE = {"debug": False}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="conslaw")
@click.option("--debug", is_flag=True, help="show the full traceback of any error (for bug reports)")
def main(debug):
    """conslaw: conservation laws of neural-network training (Marcotte, Gribonval, Peyre, ICML 2025)."""
    _STATE["debug"] = _STATE["debug"] or debug


for _command in (count_cmd, discover_cmd, laws_cmd, rebalance_cmd, reproduce_cmd, bench_cmd, tour_cmd):
    main.add_command(_command)


def _one_line(text: str) -> str:
    """``text`` on one line (messages of Python and torch errors may span several)."""
    return " ".join(str(text).split())


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"conslaw: warning: {_one_line(message)}\n"


def _error(message: str, code: int, exc: BaseException | None = None) -> None:
    """Print the traceback (``--debug``) and the one line, then exit with ``code``."""
    sys.stdout.flush()
    if exc is not None and _STATE["debug"]:
        traceback.print_exception(exc, file=sys.stderr)
    click.echo(message, err=True)
    sys.exit(code)


def run() -> None:
    """Entry point: one line ``conslaw: error: ...; fix: ...`` and exit 2 for anything the user can cause."""
    _STATE["debug"] = os.environ.get("CONSLAW_DEBUG", "") not in ("", "0")
    show_warning = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        main.main(standalone_mode=False, prog_name="conslaw")
    except ConslawError as exc:
        _error(f"conslaw: error: {_one_line(exc)}", 2, exc)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        _error("conslaw: aborted", 130, exc)
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:  # a bare group: its help, as click
            click.echo(exc.ctx.get_help(), err=True)
            sys.exit(2)
        fix = f"; fix: see '{exc.ctx.command_path} --help'" if exc.ctx is not None else "; fix: see 'conslaw --help'"
        if exc.ctx is not None and isinstance(exc.ctx.command, click.Group) and "No such command" in exc.message:
            fix = f"; fix: use one of {', '.join(exc.ctx.command.list_commands(exc.ctx))}"
        _error(f"conslaw: error: {_one_line(exc.format_message())}{fix}", 2, exc)
    except click.ClickException as exc:
        _error(f"conslaw: error: {_one_line(exc.format_message())}; fix: see 'conslaw --help'", exc.exit_code, exc)
    except MemoryError as exc:
        _error("conslaw: error: out of memory; fix: use smaller sizes (the size guards estimate only the main "
               "arrays)", 2, exc)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        _error(f"conslaw: error: {_one_line(exc.strerror or exc)}{where}; fix: check the path, its permissions "
               "and the free disk space", 2, exc)
    except Exception as exc:  # an internal bug: one line, the traceback with --debug
        _error(f"conslaw: internal error: {type(exc).__name__}: {_one_line(exc)}; fix: rerun with "
               "'conslaw --debug ...' for the traceback and report it", 1, exc)
    finally:
        warnings.formatwarning = show_warning


__all__ = ["main", "run"]

"""``conslaw laws MODEL``: find, verify and count the laws of a real nn.Module."""

from __future__ import annotations

import click

from .common import CONTEXT, INPUT_SHAPE_OPTION, JSON_OPTION, LOSS_OPTION, echo_json, model_and_input


def format_laws(data: dict) -> list[str]:
    """The human-readable family table of ``ModelLaws.as_dict()``."""
    lines = [f"{data['model']}: D = {data['D']:,} parameters, loss {data['loss']}, {data['seconds']:.1f} s",
             f"  {'family':28s} {'module':34s} {'count':>5s} {'exact':>5s} {'approx':>6s} {'failed':>6s} "
             f"{'residual':>9s}  formula (first)"]
    for row in data["families"]:
        formula = row["formula"] if len(row["formula"]) <= 100 else row["formula"][:97] + "..."
        lines.append(f"  {row['family']:28s} {str(row['module'])[:34]:34s} {row['count']:5d} {row['exact']:5d} "
                     f"{row['approximate']:6d} {row['failed']:6d} {row['max_residual']:9.1e}  {formula}")
    lines.append(f"  named laws (independent, exact): {data['named_laws']}"
                 + (f"   + {data['approximate_laws']} approximate" if data["approximate_laws"] else ""))
    if data["numeric_laws"] is not None:
        lines.append(f"  numeric laws (D - dim Lie):       {data['numeric_laws']}"
                     + (f"   -> {data['unnamed_laws']} not yet named" if data["unnamed_laws"] else ""))
    if data["uncovered_params"]:
        lines.append(f"  uncovered parameters: {', '.join(data['uncovered_params'])}")
    lines += [f"  warning: {w}" for w in data["warnings"]] + [f"  note: {n}" for n in data["notes"]]
    return lines


@click.command("laws", context_settings=CONTEXT)
@click.argument("model", required=False)
@INPUT_SHAPE_OPTION
@LOSS_OPTION
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batches", type=click.IntRange(min=1), default=6, show_default=True,
              help="loss gradients per verification point")
@click.option("--numeric/--no-numeric", default=None,
              help="also count the laws with the Lie engine (default: when D <= 4000)")
@click.option("--max-memory", type=float, default=None, metavar="GB",
              help="refuse models whose analysis needs more (default: the memory available now)")
@click.option("--list", "show_list", is_flag=True, help="list the built-in models")
@JSON_OPTION
def laws_cmd(model, input_shape, loss, seed, batches, numeric, max_memory, show_list, as_json):
    """Find, verify and count the conservation laws of MODEL (built-in, FILE.py:FUNCTION or pkg.mod:FUNCTION)."""
    from ..models import BUILTINS
    from ..nn import find_laws

    if show_list:
        if as_json:
            echo_json({"models": {k: b.description for k, b in BUILTINS.items()}})
        else:
            for key, b in BUILTINS.items():
                click.echo(f"{key:26s} {b.description}")
        return
    if model is None:
        raise click.UsageError("missing MODEL; run 'conslaw laws --list' for the built-in models")
    name, module, example, default_loss = model_and_input(model, input_shape)
    result = find_laws(module, example, loss or default_loss or "mse", batches=batches, seed=seed,
                       numeric=numeric, name=name, max_memory=max_memory)
    data = result.as_dict()
    if as_json:
        echo_json(data)
    else:
        click.echo("\n".join(format_laws(data)))

"""``conslaw laws MODEL`` / ``conslaw laws --model-kind KIND --config FILE.json``: the laws of a real nn.Module.

MODEL: a built-in, FILE.py:FUNCTION or package.module:FUNCTION returning a module or (module, example input),
the input a tensor, a tuple or a dict (a Hugging Face batch). KIND: ``hf:MODEL_TYPE``, ``hf:auto``,
``timm:NAME``, ``torchvision:NAME`` built with random init (:mod:`conslaw.models.kinds`).
"""

from __future__ import annotations

import click

from ..errors import ConslawError
from .common import (
    CONTEXT,
    INPUT_SHAPE_OPTION,
    JSON_OPTION,
    LOSS_OPTION,
    echo_json,
    kind_and_input,
    model_and_input,
    resolve_cli_loss,
)


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
@click.option("--model-kind", "kind", default=None, metavar="KIND",
              help="build a library model instead of MODEL: hf:gpt2, hf:bert, hf:llama, hf:t5, hf:auto (any "
                   "transformers model_type; needs --config), timm:NAME, torchvision:NAME; random init from --seed")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False), metavar="FILE.json",
              help="the model's config: transformers config fields (hf:), keyword arguments (timm:, torchvision:)")
@click.option("--seq-len", type=click.IntRange(min=1), default=None,
              help="tokens per example of an hf: batch (default: 8, at most the config's positions)")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="examples in the example batch of --model-kind (default 2)")
@INPUT_SHAPE_OPTION
@LOSS_OPTION
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the weights (--model-kind), the "
              "example batch and every random draw")
@click.option("--batches", type=click.IntRange(min=1), default=6, show_default=True,
              help="loss gradients per verification point")
@click.option("--numeric/--no-numeric", default=None,
              help="also count the laws with the Lie engine (default: when D <= 4000)")
@click.option("--max-memory", type=float, default=None, metavar="GB",
              help="refuse models whose analysis needs more (default: the memory available now)")
@click.option("--list", "show_list", is_flag=True, help="list the built-in models")
@JSON_OPTION
def laws_cmd(model, kind, config, seq_len, batch_size, input_shape, loss, seed, batches, numeric, max_memory,
             show_list, as_json):
    """Find, verify and count the conservation laws of MODEL (built-in, FILE.py:FUNCTION or pkg.mod:FUNCTION).

    Or of a library model built from a config: --model-kind hf:gpt2 --config cfg.json.
    """
    from ..models import BUILTINS
    from ..nn import find_laws

    if show_list:
        if as_json:
            echo_json({"models": {k: b.description for k, b in BUILTINS.items()}})
        else:
            for key, b in BUILTINS.items():
                click.echo(f"{key:26s} {b.description}")
        return
    if model is not None and kind is not None:
        raise ConslawError(f"got both MODEL {model!r} and --model-kind {kind}", "pass one of them")
    if kind is None:
        if model is None:
            raise click.UsageError("missing MODEL (or --model-kind KIND --config FILE.json); run 'conslaw laws "
                                   "--list' for the built-in models")
        unused = [flag for flag, value in (("--config", config), ("--seq-len", seq_len),
                                           ("--batch-size", batch_size)) if value is not None]
        if unused:
            raise ConslawError(f"{', '.join(unused)} apply to --model-kind only, got MODEL {model!r}",
                               "drop them, or build the model with --model-kind KIND --config FILE.json")
    user_loss = resolve_cli_loss(loss)
    if kind is not None:
        name, module, example, default_loss = kind_and_input(kind, config, input_shape, seq_len, batch_size, seed,
                                                             user_loss)
    else:
        name, module, example, default_loss = model_and_input(model, input_shape)
    result = find_laws(module, example, user_loss or default_loss or "mse", batches=batches, seed=seed,
                       numeric=numeric, name=name, max_memory=max_memory)
    data = result.as_dict()
    if as_json:
        echo_json(data)
    else:
        click.echo("\n".join(format_laws(data)))

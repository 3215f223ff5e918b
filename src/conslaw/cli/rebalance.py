"""``conslaw rebalance MODEL``: move a model along its symmetry orbits until its laws reach a target."""

from __future__ import annotations

import click

from ..io import check_parent, save_torch
from .common import CONTEXT, INPUT_SHAPE_OPTION, JSON_OPTION, LOSS_OPTION, echo_json, model_and_input, resolve_cli_loss


@click.command("rebalance", context_settings=CONTEXT)
@click.argument("model")
@INPUT_SHAPE_OPTION
@LOSS_OPTION
@click.option("--target", type=float, default=0.0, show_default=True,
              help="value every rescaling law is moved to (attention heads: 0 only)")
@click.option("--save", "save_path", default=None, type=click.Path(dir_okay=False),
              help="write the rebalanced state_dict (float64) here")
@JSON_OPTION
def rebalance_cmd(model, input_shape, loss, target, save_path, as_json):
    """Move MODEL along its symmetry orbits until its laws reach TARGET; the function is unchanged."""
    from ..rebalance import rebalance

    if save_path:
        check_parent(save_path, "--save file")
    name, module, example, default_loss = model_and_input(model, input_shape)
    result = rebalance(module, example, resolve_cli_loss(loss) or default_loss or "mse", target=target)
    data = {"model": name, **result.as_dict()}
    if save_path:
        save_torch(result.model.state_dict(), save_path)
        data["saved"] = save_path
    if as_json:
        echo_json(data)
        return
    click.echo(f"{name}: {data['laws']} laws ({data['attention_heads']} attention heads) moved to {target:g} in "
               f"{data['iterations']} round(s): max |h - target| {data['max_error_before']:.2e} -> "
               f"{data['max_error_after']:.2e}; relative output change {data['max_output_change']:.1e}")

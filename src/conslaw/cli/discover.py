"""``conslaw discover ARCH-OR-MODEL --degree K``: polynomial laws with a completeness certificate."""

from __future__ import annotations

import click

from ..catalog import Architecture
from ..discover import Discovery, discover
from .common import (
    BLOCK_OPTION,
    CONTEXT,
    FIELDS_OPTION,
    INIT_OPTION,
    INPUT_SHAPE_OPTION,
    JSON_OPTION,
    LOSS_OPTION,
    RESIDUAL_OPTION,
    SEED_OPTION,
    compose,
    echo_json,
    model_and_input,
    parse_block,
    parse_int,
    register_arch_commands,
    resolve_cli_loss,
)


class DiscoverGroup(click.Group):
    """Catalog blocks as subcommands; any other name is a MODEL, as for ``conslaw laws``."""

    def get_command(self, ctx, cmd_name):
        """A catalog subcommand, or the MODEL command for any other name."""
        command = super().get_command(ctx, cmd_name)
        return command if command is not None else model_discover_command(cmd_name)

    def resolve_command(self, ctx, args):
        """Resolve MODEL names too (click would refuse unknown subcommands)."""
        name = args[0] if args else None
        command = self.get_command(ctx, name) if name else None
        return (name, command, args[1:]) if command is not None else super().resolve_command(ctx, args)


@click.group("discover", cls=DiscoverGroup, context_settings=CONTEXT)
def discover_cmd():
    """Find the polynomial conservation laws of a block or a MODEL, with a completeness certificate.

    MODEL is a built-in name (conslaw laws --list), FILE.py:FUNCTION or package.module:FUNCTION.
    """


discover_options = compose(
    click.option("--degree", required=True, help="maximal degree K of the polynomial laws"),
    click.option("--homogeneous", is_flag=True, help="only homogeneous polynomials of degree K"),
    FIELDS_OPTION, INIT_OPTION, SEED_OPTION, RESIDUAL_OPTION, BLOCK_OPTION, JSON_OPTION)

#: options of ``discover MODEL`` (fields are the model's loss gradients; no --fields or --residual)
model_discover_options = compose(
    INPUT_SHAPE_OPTION, LOSS_OPTION,
    click.option("--degree", required=True, help="maximal degree K of the polynomial laws"),
    click.option("--homogeneous", is_flag=True, help="only homogeneous polynomials of degree K"),
    SEED_OPTION, BLOCK_OPTION, JSON_OPTION)


def model_discover_command(spec: str) -> click.Command:
    """The ``discover MODEL`` command for one model spec."""
    @click.command(spec, context_settings=CONTEXT)
    @model_discover_options
    def command(input_shape, loss, degree, homogeneous, seed, block, as_json):
        from ..nn.discover import discover_model

        name, module, example, default_loss = model_and_input(spec, input_shape)
        result = discover_model(module, example, resolve_cli_loss(loss) or default_loss or "mse",
                                parse_int(degree, "degree"), homogeneous=homogeneous, seed=seed,
                                block=parse_block(block))
        report(name, name, result, homogeneous, seed, as_json)

    return command


def run_discover(arch: Architecture, degree, homogeneous, fields, init, seed, block, as_json):
    """Discover on a catalog block, then report."""
    result = discover(arch.fields(fields), parse_int(degree, "degree"), homogeneous=homogeneous, init=init,
                      seed=seed, block=parse_block(block))
    report(arch.name, arch.label, result, homogeneous, seed, as_json)


def report(name: str, label: str, result: Discovery, homogeneous: bool, seed: int, as_json: bool) -> None:
    """Print the laws and the certificate, or the JSON object."""
    data = {"arch": name, "label": label, **result.as_dict()}
    if as_json:
        echo_json(data)
        return
    click.echo(f"{label}   (degree <= {data['degree']}{', homogeneous' if homogeneous else ''}, "
               f"D = {data['D']}, seed {seed})")
    for k, law in enumerate(data["laws"]):
        click.echo(f"  h{k} = {law['formula']}")
    click.echo(f"  {data['certificate']}")
    for note in data["notes"]:
        click.echo(f"  note: {note}")


register_arch_commands(discover_cmd, discover_options, run_discover)

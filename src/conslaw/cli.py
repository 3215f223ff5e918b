"""Command-line interface: ``conslaw count | bench | tour`` (DESIGN.md's CLI contract).

``--json`` prints exactly one JSON object on stdout; progress and logs go to
stderr. Bad input prints one line ``conslaw: error: ...`` and exits with 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np
import torch

from . import catalog
from .catalog.base import Architecture
from .count import CountResult, count
from .errors import ConslawError

CONTEXT = {"help_option_names": ["-h", "--help"]}
POSITIONAL = {**CONTEXT, "ignore_unknown_options": True}


def compose(*decorators):
    """One decorator applying ``decorators`` in order (the first is the outermost option)."""
    def apply(fn):
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn
    return apply


FIELDS_OPTION = click.option("--fields", type=click.Choice(["reparam", "model"]), default=None,
                             help="dphi^T a (eq. 9) or d_theta g^T w (Cor 2.5); default: reparam where the "
                                  "catalog has phi")
INIT_OPTION = click.option("--init", type=click.Choice(["gaussian", "positive"]), default="gaussian",
                           show_default=True, help="distribution of the random theta")
SEED_OPTION = click.option("--seed", type=int, default=0, show_default=True,
                           help="seed of theta and of every random draw")
RESIDUAL_OPTION = click.option("--residual", is_flag=True,
                               help="wrap the block in a skip connection x + g(x) (Prop 3.2)")
BLOCK_OPTION = click.option("--block", default=None,
                            help="comma-separated parameter names: the laws depending on these only (Prop 4.3)")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")

#: options of every ``count`` form
common_options = compose(
    click.option("--flow", type=click.Choice(["gradient", "sign"]), default="gradient", show_default=True,
                 help="gradient flow (eq. 4) or sign/Adam flow (eq. 12)"),
    FIELDS_OPTION, INIT_OPTION, SEED_OPTION,
    click.option("--theta", "theta_file", type=click.Path(dir_okay=False), default=None,
                 help="evaluate at this theta (.npy, .json list or whitespace-separated text of D numbers)"),
    RESIDUAL_OPTION, BLOCK_OPTION,
    click.option("--rtol", type=float, default=1e-8, show_default=True, help="relative rank threshold"),
    click.option("--show-laws", is_flag=True, help="list the catalog's closed-form laws"),
    JSON_OPTION)


def load_theta(path: str | None) -> torch.Tensor | None:
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise ConslawError(f"theta file {path!r} does not exist", "pass the path of an existing file")
    try:
        if p.suffix == ".npy":
            values = np.load(p)
        elif p.suffix == ".json":
            values = np.asarray(json.loads(p.read_text()), dtype=float)
        else:
            values = np.loadtxt(p, dtype=float)
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConslawError(f"cannot read theta from {path!r}: {exc}",
                           "write D numbers as .npy, a JSON list, or whitespace-separated text") from exc
    return torch.as_tensor(np.asarray(values, dtype=float).reshape(-1))


def format_count(result: CountResult, data: dict) -> str:
    lines = [f"{result.arch.label}   (fields: {data['fields']}, flow: {data['flow']}, "
             f"init: {data['init']}, seed: {data['seed']})",
             f"  parameters D                      {data['D']}"]
    levels = "  ".join(f"{lv['level']}:+{lv['added']}" for lv in data["levels"])
    lines.append(f"  dim Lie(W)(theta)                 {data['lie_dim']}   "
                 f"(levels {levels}{', saturated' if data['saturated'] else ''})")
    lines.append(f"  conservation laws (D - dim Lie)   {data['num_laws']}")
    if data["known_laws"] is None:
        lines.append("  catalog closed forms              none for this flow")
    else:
        res = data["max_law_residual"]
        lines.append(f"  catalog closed forms              {data['known_laws']} independent"
                     + (f"   (max residual {res:.1e})" if res is not None else ""))
    if data["expected"] is not None:
        lines.append(f"  paper                             {data['expected']}   ({data['expected_source']})")
    gap = data["spectral_gap"]
    lines.append(f"  spectral gap                      {'exact zeros' if gap is None else f'{gap:.2e}'}")
    lines.append(f"  time                              {data['seconds']:.2f} s")
    for law in data.get("laws", []):
        lines.append(f"    {law['name']}:  {law['formula']}")
    lines += [f"  note: {n}" for n in data["notes"]] + [f"  warning: {w}" for w in data["warnings"]]
    return "\n".join(lines)


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="conslaw")
def main():
    """conslaw: conservation laws of neural-network training (Marcotte, Gribonval, Peyre, ICML 2025)."""


@main.group(context_settings=CONTEXT)
def count_cmd():
    """Count the independent conservation laws of a building block (Thm 2.11)."""


main.add_command(count_cmd, name="count")


ARCH_SPECS = {
    "linear": (
        "Deep linear network; WIDTHS input first (W0 W1 ... Wq).",
        [click.argument("widths", nargs=-1, required=True)],
        lambda o: catalog.linear(*parse_ints(o.pop("widths"), "width"))),
    "relu": (
        "Deep ReLU network; WIDTHS input first (W0 W1 ... Wq).",
        [click.argument("widths", nargs=-1, required=True),
         click.option("--bias", is_flag=True, help="biases on the hidden neurons")],
        lambda o: catalog.relu(*parse_ints(o.pop("widths"), "width"), bias=o.pop("bias"))),
    "conv": (
        "Two-layer circular convolutional ReLU block, eq. (16) (Thm 3.6).",
        [click.option("--channels", nargs=3, required=True, help="C0 C1 C2"),
         click.option("--pixels", required=True, help="P, samples per channel"),
         click.option("--filters", nargs=2, required=True, help="NV NU, taps of the first and second filters"),
         click.option("--stride", default="1", show_default=True, help="S, stride of the first convolution")],
        lambda o: catalog.conv(parse_ints(o.pop("channels"), "channel count"), parse_int(o.pop("pixels"), "pixels"),
                               parse_ints(o.pop("filters"), "filter length"), parse_int(o.pop("stride"), "stride"))),
    "attention": (
        "Self-attention, eq. (18) (one head, Cor 3.9) or eq. (19) (H heads, Cor 3.10).",
        [click.option("--tokens", required=True, help="N"),
         click.option("--dim", required=True, help="E, token dimension"),
         click.option("--d1", required=True, help="D1, rows of Q, K, V, O"),
         click.option("--heads", default="1", show_default=True, help="H, heads (must divide D1)")],
        lambda o: catalog.attention(parse_int(o.pop("tokens"), "tokens"), parse_int(o.pop("dim"), "dim"),
                                    parse_int(o.pop("d1"), "d1"), parse_int(o.pop("heads"), "heads"))),
    "softmax": (
        "Softmax layer with cross-entropy, eq. (20) (Prop 3.11).",
        [click.option("--classes", required=True, help="N"), click.option("--inputs", required=True, help="M")],
        lambda o: catalog.softmax(parse_int(o.pop("classes"), "classes"), parse_int(o.pop("inputs"), "inputs"))),
    "resnet": (
        "Dense ResNet x -> x + U relu(V x), Q blocks (Sec 4.4).",
        [click.option("--dim", required=True, help="M"), click.option("--width", required=True, help="R"),
         click.option("--blocks", required=True, help="Q")],
        lambda o: catalog.resnet(parse_int(o.pop("dim"), "dim"), parse_int(o.pop("width"), "width"),
                                 parse_int(o.pop("blocks"), "blocks"))),
    "transformer": (
        "Transformer of Ex 4.2: attention (eq. 23) and MLP (eq. 22) residual blocks, no normalization.",
        [click.option("--tokens", required=True, help="N"), click.option("--dim", required=True, help="E"),
         click.option("--d1", required=True, help="D1, rows of Q, K, V, O"),
         click.option("--hidden", required=True, help="R, hidden width of the MLP blocks"),
         click.option("--layers", default="1", show_default=True, help="attention + MLP pairs")],
        lambda o: catalog.transformer(parse_int(o.pop("tokens"), "tokens"), parse_int(o.pop("dim"), "dim"),
                                      parse_int(o.pop("d1"), "d1"), parse_int(o.pop("hidden"), "hidden"),
                                      parse_int(o.pop("layers"), "layers"))),
}


def register_arch_commands(group: click.Group, options, action) -> None:
    """One subcommand per catalog family under ``group``; ``action(arch, **options)`` runs it."""
    for name, (doc, params, build) in ARCH_SPECS.items():

        def command(_build=build, **opts):
            arch = _build(opts)
            if opts.pop("residual", False):
                arch = arch.residual()
            action(arch, **opts)

        command.__doc__ = doc
        for decorator in reversed(params):
            command = decorator(command)
        command = options(command)
        settings = POSITIONAL if name in ("linear", "relu") else CONTEXT
        group.command(name, context_settings=settings)(command)


def parse_block(text: str | None) -> list[str] | None:
    return None if not text else [name.strip() for name in text.split(",") if name.strip()]


def run_count(arch: Architecture, flow, fields, init, seed, theta_file, block, rtol, show_laws, as_json):
    result = count(arch, fields=fields, flow=flow, init=init, seed=seed, theta=load_theta(theta_file),
                   rtol=rtol, block=parse_block(block), progress=not as_json and sys.stderr.isatty())
    data = result.as_dict()
    if show_laws:
        laws = arch.law_set(flow)
        data["laws"] = [] if laws is None else [
            {"name": law.name, "formula": law.formula, "params": list(law.params)} for law in laws]
    if as_json:
        click.echo(json.dumps(data))
    else:
        click.echo(format_count(result, data))


register_arch_commands(count_cmd, common_options, run_count)


class DiscoverGroup(click.Group):
    """Catalog blocks as subcommands; any other name is a MODEL, as for ``conslaw laws``."""

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        return command if command is not None else model_discover_command(cmd_name)

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        command = self.get_command(ctx, name) if name else None
        return (name, command, args[1:]) if command is not None else super().resolve_command(ctx, args)


@main.group(cls=DiscoverGroup, context_settings=CONTEXT)
def discover():
    """Find the polynomial conservation laws of a block or a MODEL, with a completeness certificate.

    MODEL is a built-in name (conslaw laws --list), FILE.py:FUNCTION or package.module:FUNCTION.
    """


def model_discover_command(spec: str) -> click.Command:
    @click.command(spec, context_settings=CONTEXT)
    @click.option("--input-shape", default=None, help="example input shape, batch first")
    @click.option("--loss", type=click.Choice(["mse", "cross_entropy"]), default=None)
    @discover_options
    def command(input_shape, loss, degree, homogeneous, fields, init, seed, residual, block, as_json):
        from .nn.find import check_model
        from .nn.verify import LossGradFields, analysis_copy

        name, module, example, default_loss = model_and_input(spec, input_shape)
        check_model(module, example)
        work = analysis_copy(module)
        example = example.double() if torch.is_floating_point(example) else example
        source = LossGradFields(work, example, loss or default_loss or "mse")
        theta = source.space.flatten(dict(work.named_parameters())).detach()
        report_discovery(name, name, source, degree, homogeneous, init, seed, block, as_json,
                         certify_at=None if parse_block(block) else theta)

    return command


#: options of every ``discover`` form
discover_options = compose(
    click.option("--degree", required=True, help="maximal degree K of the polynomial laws"),
    click.option("--homogeneous", is_flag=True, help="only homogeneous polynomials of degree K"),
    FIELDS_OPTION, INIT_OPTION, SEED_OPTION, RESIDUAL_OPTION, BLOCK_OPTION, JSON_OPTION)


def run_discover(arch: Architecture, degree, homogeneous, fields, init, seed, block, as_json):
    report_discovery(arch.name, arch.label, arch.fields(fields), degree, homogeneous, init, seed, block, as_json)


def report_discovery(name, label, source, degree, homogeneous, init, seed, block, as_json, certify_at=None):
    from .discover import discover as find
    from .fields import RestrictedFields

    if parse_block(block):
        source = RestrictedFields(source, parse_block(block), init)
    result = find(source, parse_int(degree, "degree"), homogeneous=homogeneous, init=init, seed=seed,
                  certify_at=certify_at)
    data = {"arch": name, "label": label, **result.as_dict()}
    if as_json:
        click.echo(json.dumps(data, default=str))
        return
    click.echo(f"{label}   (degree <= {data['degree']}{', homogeneous' if homogeneous else ''}, "
               f"D = {data['D']}, seed {seed})")
    for k, law in enumerate(data["laws"]):
        click.echo(f"  h{k} = {law['formula']}")
    click.echo(f"  {data['certificate']}")
    for note in data["notes"]:
        click.echo(f"  note: {note}")


register_arch_commands(discover, discover_options, run_discover)


def model_and_input(spec: str, input_shape: str | None):
    """(name, module, example input, default loss) for MODEL and an optional --input-shape like 2,3,32,32."""
    from .nn.load import load_model

    shape = parse_ints(input_shape.replace("x", ",").split(","), "input shape") if input_shape else None
    name, module, example, default_loss = load_model(spec, shape)
    if shape is not None:
        example = torch.randn(*shape)
    if example is None:
        raise ConslawError(f"{spec} gives no example input", "pass --input-shape, e.g. --input-shape 2,3,32,32")
    return name, module, example, default_loss


def parse_int(text, what: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ConslawError(f"{what} must be an integer, got {text!r}", f"pass a whole number for {what}") from None


def parse_ints(texts, what: str) -> list[int]:
    return [parse_int(t, what) for t in texts]


@main.command("laws", context_settings=CONTEXT)
@click.argument("model", required=False)
@click.option("--input-shape", default=None, help="example input shape, batch first, e.g. 2,3,32,32")
@click.option("--loss", type=click.Choice(["mse", "cross_entropy"]), default=None,
              help="the training loss (default: the built-in model's, else mse)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batches", type=int, default=6, show_default=True, help="loss gradients used for verification")
@click.option("--numeric/--no-numeric", default=None,
              help="also count the laws with the Lie engine (default: when D <= 4000)")
@click.option("--list", "show_list", is_flag=True, help="list the built-in models")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def laws_cmd(model, input_shape, loss, seed, batches, numeric, show_list, as_json):
    """Find, verify and count the conservation laws of MODEL (built-in, FILE.py:FUNCTION or pkg.mod:FUNCTION)."""
    from .models import BUILTINS
    from .nn import find_laws

    if show_list:
        if as_json:
            click.echo(json.dumps({"models": {k: b.description for k, b in BUILTINS.items()}}))
        else:
            for key, b in BUILTINS.items():
                click.echo(f"{key:26s} {b.description}")
        return
    if model is None:
        raise click.UsageError("missing MODEL; run 'conslaw laws --list' for the built-in models")
    name, module, example, default_loss = model_and_input(model, input_shape)
    result = find_laws(module, example, loss or default_loss or "mse", batches=batches, seed=seed,
                       numeric=numeric, name=name)
    data = result.as_dict()
    if as_json:
        click.echo(json.dumps(data))
        return
    click.echo(f"{name}: D = {data['D']:,} parameters, loss {data['loss']}, {data['seconds']:.1f} s")
    click.echo(f"  {'family':28s} {'module':34s} {'count':>5s} {'exact':>5s} {'approx':>6s} {'failed':>6s} "
               f"{'residual':>9s}  formula (first)")
    for row in data["families"]:
        click.echo(f"  {row['family']:28s} {row['module'][:34]:34s} {row['count']:5d} {row['exact']:5d} "
                   f"{row['approximate']:6d} {row['failed']:6d} {row['max_residual']:9.1e}  {row['formula']}")
    click.echo(f"  named laws (independent, exact): {data['named_laws']}")
    if data["numeric_laws"] is not None:
        click.echo(f"  numeric laws (D - dim Lie):       {data['numeric_laws']}"
                   + (f"   -> {data['unnamed_laws']} not yet named" if data["unnamed_laws"] else ""))
    if data["uncovered_params"]:
        click.echo(f"  uncovered parameters: {', '.join(data['uncovered_params'])}")
    for w in data["warnings"]:
        click.echo(f"  warning: {w}")
    for n in data["notes"]:
        click.echo(f"  note: {n}")


@main.command("rebalance", context_settings=CONTEXT)
@click.argument("model")
@click.option("--input-shape", default=None, help="example input shape, batch first")
@click.option("--loss", type=click.Choice(["mse", "cross_entropy"]), default=None)
@click.option("--target", type=float, default=0.0, show_default=True,
              help="value every rescaling law is moved to (attention heads: 0 only)")
@click.option("--save", "save_path", default=None, type=click.Path(dir_okay=False),
              help="write the rebalanced state_dict (float64) here")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def rebalance_cmd(model, input_shape, loss, target, save_path, as_json):
    """Move MODEL along its symmetry orbits until its laws reach TARGET; the function is unchanged."""
    from .rebalance import rebalance

    name, module, example, default_loss = model_and_input(model, input_shape)
    example = example.double() if torch.is_floating_point(example) else example
    result = rebalance(module.double(), example, loss or default_loss or "mse", target=target)
    x = torch.randn(8, *example.shape[1:], dtype=torch.float64) if torch.is_floating_point(example) else example
    with torch.no_grad():
        before, after = module(x), result.model(x)
    data = {"model": name, **result.as_dict(),
            "max_output_change": float((before - after).abs().max() / before.abs().max().clamp_min(1e-300))}
    if save_path:
        torch.save(result.model.state_dict(), save_path)
        data["saved"] = save_path
    if as_json:
        click.echo(json.dumps(data))
        return
    click.echo(f"{name}: {data['laws']} laws ({data['attention_heads']} attention heads) moved to {target:g} in "
               f"{data['iterations']} round(s): max |h - target| {data['max_error_before']:.2e} -> "
               f"{data['max_error_after']:.2e}; relative output change {data['max_output_change']:.1e}")


@main.command("reproduce", context_settings=CONTEXT)
@click.argument("experiment")
@click.option("--quick", is_flag=True, help="reduced sizes (narrow ResNet, fewer seeds and steps)")
@click.option("--data", default=None, type=click.Path(file_okay=False), help="dataset folder (else SYNTHETIC data)")
@click.option("--out", default="results", show_default=True, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def reproduce_cmd(experiment, quick, data, out, as_json):
    """Reproduce a claim or figure of the paper: thm21, prop51, sweep, appR, fig1, all."""
    from .experiments import reproduce

    result = reproduce(experiment, quick=quick, data=data, out=out)
    if as_json:
        click.echo(json.dumps(result, default=str))
        return
    for claim in result["claims"]:
        click.echo(f"{claim['claim']:58s} paper: {claim['paper']:28s} measured: {claim['measured']:34s} "
                   f"{'PASS' if claim['pass'] else 'FAIL'}")
    if "figure" in result:
        click.echo(f"figure: {result['figure']}   results: {result['results']}"
                   + ("   (SYNTHETIC data)" if result.get("synthetic") else ""))


@main.group(context_settings=CONTEXT)
def bench():
    """Benchmarks against the reference implementation."""


@bench.command("anchor-suites", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def bench_anchor(as_json):
    """The reference notebook's 50 linear and 50 ReLU networks: num_laws == known_laws?"""
    from .bench import anchor_suites

    print_suites(anchor_suites(progress=not as_json), as_json)


@bench.command("discover-suites", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def bench_discover(as_json):
    """The reference notebook's two 10-network degree-2 suites: laws found == known laws?"""
    from .bench import discover_suites

    print_suites(discover_suites(progress=not as_json), as_json)


def print_suites(result: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result))
        return
    for name, suite in result["suites"].items():
        click.echo(f"{name:7s} {suite['matched']}/{suite['nets']} matched in {suite['seconds']:.2f} s")
    click.echo(f"(one-time warm-up of torch.func: {result['warmup_seconds']:.2f} s, not included)")


@main.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def tour(as_json):
    """Count every catalog block and built-in model, and compare with the paper's theorems."""
    from .tour import run_tour

    rows = run_tour(progress=not as_json)
    if as_json:
        click.echo(json.dumps({"tour": rows, "all_pass": all(r["pass"] for r in rows)}))
        return
    click.echo(f"{'block':44s} {'D':>5s} {'laws':>5s} {'known':>5s} {'paper':>5s}  {'claim':40s} result")
    for r in rows:
        click.echo(f"{r['label']:44s} {r['D']:5d} {r['num_laws']:5d} {r['known_laws']!s:>5s} "
                   f"{r['expected']!s:>5s}  {r['claim']:40s} {'PASS' if r['pass'] else 'FAIL'}")
    n_pass = sum(r["pass"] for r in rows)
    click.echo(f"{n_pass}/{len(rows)} claims reproduced")


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
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        if exc.ctx is not None and isinstance(exc.ctx.command, click.Group) and "No such command" in exc.message:
            choices = ", ".join(exc.ctx.command.list_commands(exc.ctx))
            hint = f"; fix: use one of {choices}"
        click.echo(f"conslaw: error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"conslaw: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)

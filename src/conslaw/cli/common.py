"""What every command shares: option decorators, integer parsing, theta files, MODEL loading, catalog subcommands."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click
import numpy as np
import torch

from ..catalog import ARCHITECTURES, Architecture, ArchSpec
from ..errors import ConslawError
from ..io import dumps_json

#: refuse example inputs with more entries than this (--input-shape 100000,100000 would be 80 GB in float64)
MAX_INPUT_ELEMENTS = 10**8

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
INPUT_SHAPE_OPTION = click.option("--input-shape", default=None,
                                  help="example input shape, batch first, e.g. 2,3,32,32")
LOSS_OPTION = click.option("--loss", default=None, metavar="NAME|FILE.py:FUNCTION",
                           help="the training loss: mse, cross_entropy ((batch, classes) or every token of "
                                "(batch, seq, vocab)), next_token (a causal LM's), model (the loss the model "
                                "returns from labels), or FILE.py:FUNCTION / package.module:FUNCTION, a "
                                "loss(output, target) or a conslaw.fields.losses.Loss (default: the model's "
                                "natural loss, else mse)")


def echo_json(data: dict) -> None:
    """Print one standard JSON object on stdout: values that are NaN or infinite are written as null."""
    click.echo(dumps_json(data))


def progress_wanted(as_json: bool) -> bool:
    """Progress bars on stderr for people at a terminal, never with --json."""
    return not as_json and sys.stderr.isatty()


def parse_int(text, what: str) -> int:
    """``text`` as an int, or a one-line error naming ``what``."""
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ConslawError(f"{what} must be an integer, got {text!r}", f"pass a whole number for {what}") from None


def parse_ints(texts, what: str) -> list[int]:
    """Every text as an int (see :func:`parse_int`)."""
    return [parse_int(t, what) for t in texts]


def parse_block(text: str | None) -> list[str] | None:
    """``--block a,b`` as a list of parameter names (None when absent)."""
    return None if not text else [name.strip() for name in text.split(",") if name.strip()]


def load_theta(path: str | None) -> torch.Tensor | None:
    """theta from a .npy file, a JSON list or whitespace-separated text (None when no path)."""
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise ConslawError(f"theta file {path!r} does not exist", "pass the path of an existing file")
    try:
        if p.suffix == ".npy":
            values = np.load(p, allow_pickle=False)
        elif p.suffix == ".json":
            values = np.asarray(json.loads(p.read_text()), dtype=float)
        else:
            values = np.loadtxt(p, dtype=float)
        values = np.asarray(values, dtype=float).reshape(-1)
    except Exception as exc:  # any malformed file: strings, objects, ragged lists, bad .npy headers, pickles
        raise ConslawError(f"cannot read theta from {path!r}: {type(exc).__name__}: {exc}",
                           "write D numbers as .npy, a JSON list, or whitespace-separated text") from exc
    return torch.as_tensor(values)


def parse_input_shape(text: str | None) -> list[int] | None:
    """``--input-shape 2,3,32,32`` as a list of positive sizes (None when absent), refused when too large."""
    if text is None:
        return None
    shape = parse_ints([t.strip() for t in text.replace("x", ",").split(",")], "input shape")
    if not shape or any(s < 1 for s in shape):
        raise ConslawError(f"input shape {text!r} has a size < 1", "give every dimension a size >= 1, e.g. 2,3,32,32")
    if len(shape) > 8:
        raise ConslawError(f"input shape {text!r} has {len(shape)} dimensions", "pass at most 8 sizes, batch first")
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise ConslawError(f"input shape {text!r} has {math.prod(shape):,} entries (limit {MAX_INPUT_ELEMENTS:,}: "
                           "the analysis keeps float64 copies and batches of it)",
                           "pass a small batch (the analysis needs 2 inputs or more, not a dataset)")
    return shape


def _load_user_model(spec: str, shape: list[int] | None):
    """``load_model`` with every failure of the user's code (syntax, imports, the build function) as one line."""
    from ..nn.load import load_model

    if ":" in spec and not all(part.strip() for part in spec.rsplit(":", 1)):
        raise ConslawError(f"MODEL {spec!r} has an empty module or function name",
                           "pass FILE.py:FUNCTION, package.module:FUNCTION or a built-in (conslaw laws --list)")
    try:
        return load_model(spec, shape)
    except ConslawError:
        raise
    except SyntaxError as exc:
        where = f"{exc.filename}, line {exc.lineno}: " if exc.filename and exc.lineno else ""
        raise ConslawError(f"cannot load model {spec!r}: {where}{type(exc).__name__}: {exc.msg}",
                           "fix the syntax of the model file") from exc
    except (Exception, SystemExit) as exc:
        raise ConslawError(f"cannot load model {spec!r}: {type(exc).__name__}: {exc}",
                           "make the file import cleanly and its function return an nn.Module ('conslaw --debug "
                           "...' shows the traceback)") from exc


def resolve_cli_loss(text: str | None):
    """``--loss``: None, a built-in name, or the loss object of FILE.py:FUNCTION / package.module:FUNCTION."""
    from ..fields.losses import BUILTIN_LOSSES, Loss
    from ..nn.load import import_attribute

    if text is None or text in BUILTIN_LOSSES:
        return text
    target, sep, name = text.rpartition(":")
    if not sep or not target.strip() or not name.strip():
        raise ConslawError(f"unknown loss {text!r}: expected a built-in name or FILE.py:FUNCTION",
                           f"use one of {', '.join(BUILTIN_LOSSES)}, or FILE.py:FUNCTION naming a function "
                           "loss(output, target)")
    try:
        fn = import_attribute(target, name, "a function loss(output, target)")
    except ConslawError:
        raise
    except (Exception, SystemExit) as exc:  # a syntax error or any other failure of the user's file
        raise ConslawError(f"cannot load loss {text!r}: {type(exc).__name__}: {exc}",
                           "make the file import cleanly") from exc
    if not isinstance(fn, Loss) and not callable(fn):
        raise ConslawError(f"{text} is a {type(fn).__name__}, expected a function loss(output, target)",
                           "name a function loss(output, target) -> scalar, or a conslaw.fields.losses.Loss")
    return fn


def check_forward(spec: str, module: torch.nn.Module, example) -> None:
    """Run ``module`` once on ``example`` (eval mode, no grad; its buffers and mode are left as they were).

    ``example``: a tensor, a tuple of positional inputs or a dict of keyword inputs (a Hugging Face batch).

    Raises:
        ConslawError: the forward fails, or returns nothing a loss can read (a tensor, a tuple's first tensor,
            a dict's / ModelOutput's ``logits``).
    """
    from ..fields.model_io import model_output
    from ..nn.analysis import call_args, describe_input

    params = [p for p in module.parameters() if torch.is_floating_point(p)]
    x = example
    if params and isinstance(x, torch.Tensor) and torch.is_floating_point(x):
        x = x.to(params[0].dtype)
    args, kwargs = call_args(x)
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        with torch.no_grad():
            out = module(*args, **kwargs)
    except Exception as exc:
        fix = ("check the model's config (e.g. a pad_token_id for a classifier over a batch) and the batch keys "
               "its forward takes" if isinstance(example, dict) else
               "pass --input-shape with the shape the model expects (batch first), or fix its forward")
        raise ConslawError(f"the example input {describe_input(example)} does not run through {spec}: "
                           f"{type(exc).__name__}: {exc}", fix) from exc
    finally:
        for m, training in modes:
            m.training = training
    try:
        model_output(out)
    except ConslawError as exc:
        raise ConslawError(f"the forward of {spec} returns {type(out).__name__}, expected a tensor, a tuple or a "
                           "dict with 'logits'",
                           "return the output tensor (e.g. out['logits']), or wrap the model in a module that does"
                           ) from exc


def model_and_input(spec: str, input_shape: str | None):
    """(name, module, example input, default loss) for MODEL and an optional --input-shape like 2,3,32,32.

    Any failure of the user's code while loading, building or running the model once is a one-line
    ConslawError naming the cause.
    """
    shape = parse_input_shape(input_shape)
    name, module, example, default_loss = _load_user_model(spec, shape)
    if shape is not None:
        example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    if example is None:
        raise ConslawError(f"{spec} gives no example input", "pass --input-shape, e.g. --input-shape 2,3,32,32")
    if not isinstance(example, torch.Tensor | tuple | list | dict):
        raise ConslawError(f"{spec} gives an example input of type {type(example).__name__}, expected a tensor, a "
                           "tuple or a dict of tensors",
                           "return (module, torch.randn(batch, ...)) or (model, {'input_ids': ...}), or pass "
                           "--input-shape")
    check_forward(spec, module, example)
    if default_loss is None:
        from ..models.hf_config import natural_loss

        default_loss = natural_loss(module, example)
    return name, module, example, default_loss


def kind_and_input(kind: str, config: str | None, input_shape: str | None, seq_len: int | None,
                   batch_size: int | None, seed: int, loss):
    """(name, module, example input, default loss) of ``--model-kind KIND [--config FILE.json]``."""
    from ..models.kinds import build_kind

    built = build_kind(kind, config, input_shape=parse_input_shape(input_shape), seq_len=seq_len,
                       batch_size=batch_size, seed=seed, labels=loss == "model")
    if not built.forward_checked:
        check_forward(kind, built.module, built.example)
    return built.name, built.module, built.example, built.loss


def _arg_decorator(arg):
    if arg.positional:
        return click.argument(arg.name, nargs=-1, required=True)
    if arg.flag:
        return click.option(arg.option, arg.name, is_flag=True, help=arg.help)
    return click.option(arg.option, arg.name, nargs=arg.nargs, required=arg.default is None,
                        default=None if arg.default is None else str(arg.default),
                        show_default=arg.default is not None, help=arg.help)


def _values(spec: ArchSpec, opts: dict) -> dict:
    """The spec's argument values from the parsed options (integers), removed from ``opts``."""
    values = {}
    for arg in spec.args:
        raw = opts.pop(arg.name)
        if arg.flag:
            values[arg.name] = bool(raw)
        elif arg.positional or arg.nargs > 1:
            values[arg.name] = parse_ints(raw, arg.name.rstrip("s"))
        elif raw is not None:
            values[arg.name] = parse_int(raw, arg.name)
    return values


def register_arch_commands(group: click.Group, options, action) -> None:
    """One subcommand per catalog constructor under ``group``; ``action(arch, **options)`` runs it."""
    for name, spec in ARCHITECTURES.items():

        def command(_spec=spec, **opts):
            arch: Architecture = _spec.make(_values(_spec, opts))
            if opts.pop("residual", False):
                arch = arch.residual()
            action(arch, **opts)

        command.__doc__ = spec.doc
        for arg in reversed(spec.args):
            command = _arg_decorator(arg)(command)
        command = options(command)
        group.command(name, context_settings=POSITIONAL if any(a.positional for a in spec.args) else CONTEXT)(command)

"""Resolve the MODEL argument of ``conslaw laws``: a built-in name, FILE.py:FUNCTION or package.module:FUNCTION.

The function returns an nn.Module, or (module, example_input): a tensor, a tuple of positional inputs, or a
dict of keyword inputs (a Hugging Face batch). :func:`import_attribute` reads any object of a user's file or
module (``--loss FILE.py:FUNCTION`` too).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

from ..errors import ConslawError


def load_model(spec: str, input_shape: list[int] | None = None) \
        -> tuple[str, nn.Module, torch.Tensor | None, str | None]:
    """(name, model, example input or None, default loss or None) for ``spec``."""
    from ..models import BUILTINS

    if spec in BUILTINS:
        b = BUILTINS[spec]
        return spec, b.build(seed=0), b.example() if input_shape is None else None, b.loss
    if ":" not in spec:
        raise ConslawError(f"unknown model {spec!r}: not a built-in and not of the form FILE.py:FUNCTION or "
                           "package.module:FUNCTION", f"use one of {', '.join(BUILTINS)} (conslaw laws --list)")
    target, func_name = spec.rsplit(":", 1)
    fn = import_attribute(target, func_name, "a function that returns an nn.Module")
    if not callable(fn):
        raise ConslawError(f"{spec} is a {type(fn).__name__}, expected a function", "name a function that returns "
                           "an nn.Module (or (module, example input))")
    try:
        out = fn()
    except Exception as exc:
        raise ConslawError(f"{spec} raised {type(exc).__name__}: {exc}".replace("\n", " "),
                           "fix the function that builds the model") from exc
    example = None
    if isinstance(out, tuple) and len(out) == 2:
        out, example = out
    if not isinstance(out, nn.Module):
        raise ConslawError(f"{spec} returned {type(out).__name__}, expected an nn.Module (or (module, input))",
                           "return the model object")
    return func_name, out, example, None


def import_attribute(target: str, name: str, what: str):
    """The object ``name`` of a Python file (``target`` ends in .py) or an importable module ``target``.

    ``what`` says what the object should be (in the error when it is missing).
    """
    if importlib.util.find_spec("torchvision") is not None:
        # user models may import transformers or timm, which import torchvision: make it importable first
        from ..vision import import_torchvision

        import_torchvision()
    if target.endswith(".py"):
        path = Path(target)
        if not path.exists():
            raise ConslawError(f"file {target!r} does not exist", "pass the path of a Python file")
        unique = f"_conslaw_user_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(unique, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[unique] = module  # dataclasses and pickling look modules up by name
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[unique]
            raise ConslawError(f"running {target} failed: {type(exc).__name__}: {exc}".replace("\n", " "),
                               "fix the error in the file") from exc
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise ConslawError(f"cannot import {target!r}: {type(exc).__name__}: {exc}".replace("\n", " "),
                               "check the module path, PYTHONPATH and the module's own imports") from exc
    if not hasattr(module, name):
        raise ConslawError(f"{target} has no {name!r}", f"name {what} defined in {target}")
    return getattr(module, name)

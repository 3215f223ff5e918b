"""Resolve the MODEL argument of ``conslaw laws``: a built-in name, FILE.py:FUNCTION or package.module:FUNCTION.

The function returns an nn.Module, or (module, example_input).
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
    if target.endswith(".py"):
        path = Path(target)
        if not path.exists():
            raise ConslawError(f"model file {target!r} does not exist", "pass the path of a Python file")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules.setdefault(path.stem, module)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConslawError(f"cannot import {target!r}: {exc}", "check the module path and PYTHONPATH") from exc
    fn = getattr(module, func_name, None)
    if fn is None or not callable(fn):
        raise ConslawError(f"{target} has no function {func_name!r}", "name a function that returns an nn.Module")
    out = fn()
    example = None
    if isinstance(out, tuple) and len(out) == 2:
        out, example = out
    if not isinstance(out, nn.Module):
        raise ConslawError(f"{spec} returned {type(out).__name__}, expected an nn.Module (or (module, input))",
                           "return the model object")
    return func_name, out, example, None

"""Models of a library, by kind: ``hf:MODEL_TYPE`` / ``hf:auto``, ``timm:NAME``, ``torchvision:NAME``.

``conslaw laws --model-kind KIND [--config FILE.json]`` builds the model with
random init from ``--seed`` (never a download), an example input, and the
model's natural training loss:

- ``hf:gpt2``, ``hf:bert``, ``hf:llama``, ``hf:t5``, any model type of
  transformers, ``hf:auto`` (the JSON's ``model_type``): see
  :mod:`conslaw.models.hf_config` (the JSON is required: its sizes);
- ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, **json)``;
- ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None, **json)``
  (torchvision through :func:`conslaw.vision.import_torchvision`).

Vision models take ``--input-shape`` (batch first), else (``--batch-size``
or 2, channels, S, S) with S the JSON's ``image_size`` / ``img_size``, else
timm's default input size, else 224; inputs are N(0, 1) from a generator
seeded with ``--seed``. Their loss is ``cross_entropy`` for (batch, classes)
outputs, else ``mse``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConslawError
from .hf_config import DEFAULT_BATCH, build_hf, read_json

#: the prefixes of ``--model-kind``
KIND_PREFIXES = ("hf", "timm", "torchvision")


@dataclass
class KindModel:
    """A model built from a kind: its name, the module, the example input and the natural loss."""

    name: str
    module: nn.Module
    example: torch.Tensor | dict
    loss: str
    description: str
    #: the example already ran through the module once and its output is readable (no second check needed)
    forward_checked: bool = False


def split_kind(kind: str) -> tuple[str, str]:
    """(prefix, name) of ``hf:gpt2``, refused when the prefix is unknown or the name empty."""
    prefix, sep, name = kind.partition(":")
    if not sep or prefix not in KIND_PREFIXES or not name.strip():
        raise ConslawError(f"unknown model kind {kind!r}: expected PREFIX:NAME with PREFIX one of "
                           f"{', '.join(KIND_PREFIXES)}",
                           "pass e.g. --model-kind hf:gpt2 --config cfg.json, hf:auto, timm:resnet18 or "
                           "torchvision:resnet18")
    return prefix, name.strip()


def build_kind(kind: str, config: str | None = None, *, input_shape: list[int] | None = None,
               seq_len: int | None = None, batch_size: int | None = None, seed: int = 0,
               labels: bool = False) -> KindModel:
    """The model of ``kind`` (see the module docstring); ``labels``: add labels to an hf batch (the model loss)."""
    prefix, name = split_kind(kind)
    if prefix == "hf":
        if config is None:
            raise ConslawError(f"--model-kind {kind} needs --config FILE.json (the sizes of the model)",
                               "write e.g. {\"n_layer\": 1, \"n_head\": 2, \"n_embd\": 8, \"vocab_size\": 16, "
                               "\"n_positions\": 8} to cfg.json and pass --config cfg.json")
        if input_shape is not None:
            raise ConslawError(f"--input-shape does not apply to {kind} (its input is a batch of token ids)",
                               "pass --seq-len and --batch-size instead")
        built = build_hf(name, config, seq_len=seq_len, batch_size=batch_size, seed=seed, labels=labels)
        return KindModel(f"{kind} {type(built.model).__name__}", built.model, built.batch, built.loss,
                         built.description)
    if seq_len is not None:
        raise ConslawError(f"--seq-len does not apply to {kind} (an image model)", "pass --input-shape")
    kwargs = read_json(config) if config is not None else {}
    module = _build_vision(prefix, name, kwargs, seed)
    shape = input_shape or _image_shape(module, kwargs, batch_size)
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    loss = _vision_loss(module, example, kind)  # runs the example once: the forward check of the CLI
    return KindModel(kind, module, example, loss, f"{prefix} {name} (random init, seed {seed})",
                     forward_checked=True)


def _build_vision(prefix: str, name: str, kwargs: dict, seed: int) -> nn.Module:
    from . import seeded

    if prefix == "timm":
        lib = _import_timm()
        names = lib.list_models()
        build = lambda: lib.create_model(name, pretrained=False, **kwargs)  # noqa: E731
    else:
        lib = _import_torchvision()
        names = lib.models.list_models()
        build = lambda: lib.models.get_model(name, weights=None, **kwargs)  # noqa: E731
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        raise ConslawError(f"{prefix} has no model {name!r}",
                           f"use one of {', '.join(close)}" if close else
                           f"list the names with {prefix}{'' if prefix == 'timm' else '.models'}.list_models()")
    try:
        return seeded(build, seed).eval()
    except Exception as exc:
        raise ConslawError(f"{prefix} could not build {name} with {kwargs}: {type(exc).__name__}: {exc}",
                           "fix the keyword arguments in the --config JSON") from exc


def _import_torchvision():
    try:
        from ..vision import import_torchvision

        return import_torchvision()
    except ImportError as exc:
        raise ConslawError(f"the torchvision: kinds need torchvision, which does not import ({exc})",
                           "install it beside the CPU torch: bash scripts/install_models.sh") from exc


def _import_timm():
    _import_torchvision()  # timm imports torchvision
    try:
        import timm
    except ImportError as exc:
        raise ConslawError("the timm: kinds need timm, which is not installed",
                           "pip install 'conslaw[models]' (see scripts/install_models.sh)") from exc
    return timm


def _image_shape(module: nn.Module, kwargs: dict, batch_size: int | None) -> list[int]:
    size = kwargs.get("image_size", kwargs.get("img_size"))
    channels = kwargs.get("in_chans", 3)
    if size is None:
        cfg = getattr(module, "pretrained_cfg", None) or {}
        if "input_size" in cfg:
            channels, size = cfg["input_size"][0], cfg["input_size"][-1]
    size = size if size is not None else 224
    size = size if isinstance(size, int) else size[-1]
    return [batch_size or DEFAULT_BATCH, int(channels), int(size), int(size)]


def _vision_loss(module: nn.Module, example: torch.Tensor, kind: str) -> str:
    from ..fields.model_io import model_output

    try:
        with torch.no_grad():
            out = model_output(module(example.to(next(module.parameters()).dtype)))
    except ConslawError:
        raise
    except Exception as exc:
        raise ConslawError(f"an input of shape {tuple(example.shape)} does not run through {kind}: "
                           f"{type(exc).__name__}: {exc}",
                           "pass --input-shape with the shape the model expects (batch first)") from exc
    return "cross_entropy" if out.dim() == 2 else "mse"

"""How a real model is called: structured example inputs, the output the loss reads, float64 kept throughout.

Inputs (:class:`ModelInputs`): a tensor, a tuple of positional inputs, or a
dict of keyword inputs (Hugging Face ``input_ids``, ``attention_mask``,
``token_type_ids``, ...). Random batches are drawn entry by entry:

- token ids (``input_ids``, ``decoder_input_ids``, or the first integer entry):
  uniform below the vocabulary, ``model.get_input_embeddings().num_embeddings``
  when the model has it, else the example's maximum + 1;
- ``labels`` (the ``model`` loss reads them): per token (2 dimensions or more)
  uniform below the vocabulary, per example below ``model.config.num_labels``
  (else the example's maximum + 1); floating labels as floating entries;
- other integer entries (``token_type_ids``): uniform below the example's maximum + 1;
- masks (a name containing ``mask``), ``position_ids``, boolean entries, entries
  constant over the example, and non-tensors (flags such as ``use_cache=False``):
  *fixed*: the example's pattern, its rows repeated to the batch size (a mask of
  ones stays ones). Fixed entries are not part of a sample, so they are never
  batched by ``vmap`` (Hugging Face mask code branches on their values);
- floating entries: the Gaussian scale mixture of :mod:`conslaw.fields.inputs`.

Outputs (:func:`model_output`): a tensor as it is, the first element of a
tuple, the ``logits`` of a dict / ``ModelOutput`` (else its first tensor);
:func:`returned_loss`: the ``loss`` of a dict / ``ModelOutput``.

Precision (:func:`keep_float64`): some models cast to float32 inside their
forward (Llama's RMSNorm and rotary embedding upcast to float32 "for
stability"), which would make every float64 residual a float32 one; inside
``keep_float64()`` a cast of a tensor to a lower floating precision keeps float64, and so does an op on a
float64 tensor asked for a lower ``dtype=`` (``softmax(x, -1, dtype=torch.float32)`` in eager attention).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import ConslawError
from ..params import DTYPE
from .inputs import gaussian_inputs

LOW_PRECISION = (torch.float32, torch.float16, torch.bfloat16)
FIXED_NAMES = ("position_ids", "cache_position")


def _lowered(dtype) -> bool:
    return isinstance(dtype, torch.dtype) and dtype in LOW_PRECISION


class KeepFloat64(TorchFunctionMode):
    """Casts of float64 (or integer) tensors to float32/16 keep float64; ``lowered`` says whether one happened."""

    def __init__(self) -> None:
        super().__init__()
        self.lowered = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.float, torch.Tensor.half, torch.Tensor.bfloat16) and args and \
                isinstance(args[0], torch.Tensor):
            self.lowered = True
            return args[0] if args[0].dtype == DTYPE else args[0].to(DTYPE)
        if func is torch.Tensor.to and args and isinstance(args[0], torch.Tensor) and not args[0].is_complex() \
                and args[0].dtype != torch.bool:
            if "dtype" in kwargs and _lowered(kwargs["dtype"]):
                kwargs = {**kwargs, "dtype": DTYPE}
                self.lowered = True
            if any(i > 0 and _lowered(a) for i, a in enumerate(args)):
                args = tuple(DTYPE if i > 0 and _lowered(a) else a for i, a in enumerate(args))
                self.lowered = True
        elif _lowered(kwargs.get("dtype")) and args and isinstance(args[0], torch.Tensor) \
                and args[0].dtype == DTYPE:  # softmax(x, dim, dtype=torch.float32) (Hugging Face eager attention)
            kwargs = {**kwargs, "dtype": DTYPE}
            self.lowered = True
        return func(*args, **kwargs)


def keep_float64() -> KeepFloat64:
    """A mode in which ``x.to(torch.float32)``, ``x.float()``, ``x.half()`` ... give float64 (see the module doc)."""
    return KeepFloat64()


def model_output(out: Any) -> torch.Tensor:
    """The tensor the loss reads: a tensor, a tuple's first element, a dict's / ModelOutput's ``logits``."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        if "logits" in out and isinstance(out["logits"], torch.Tensor):
            return out["logits"]
        for value in out.values():
            if isinstance(value, torch.Tensor):
                return value
    elif isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ConslawError(f"the model returned {type(out).__name__}, which holds no output tensor the loss can read",
                       "return a tensor, a tuple whose first element is the output, or a dict with 'logits'")


def returned_loss(out: Any) -> torch.Tensor:
    """The loss a model returned: the ``loss`` of a dict / ``ModelOutput``."""
    loss = out.get("loss") if isinstance(out, Mapping) else None
    if not isinstance(loss, torch.Tensor):
        raise ConslawError(f"the model returned {type(out).__name__} without a 'loss' tensor",
                           "pass labels in the batch to a model that computes its loss (Hugging Face *ForCausalLM, "
                           "*ForSequenceClassification, ...), or use the loss next_token / cross_entropy")
    return loss


@dataclass
class InputEntry:
    """One entry of a structured input: its key (position or name), how it is drawn, and the example's value.

    ``kind``: ``tokens`` (uniform below ``high``), ``float`` (Gaussian scale mixture) or ``fixed``.
    """

    key: int | str
    kind: str
    value: Any
    high: int | None = None


def input_vocab(model: nn.Module) -> int | None:
    """The vocabulary of ``model.get_input_embeddings()`` (Hugging Face models), None when it has none."""
    get = getattr(model, "get_input_embeddings", None)
    if not callable(get):
        return None
    try:
        emb = get()
    except Exception:  # models that declare the method without an embedding raise NotImplementedError and others
        return None
    return emb.num_embeddings if isinstance(emb, nn.Embedding) else None


class ModelInputs:
    """A structured example input (tuple or dict of tensors): draws random batches, builds the call.

    Args:
        model: the model (its input embedding gives the vocabulary of token ids).
        example: a tuple of positional inputs or a dict of keyword inputs, batch first.
    """

    def __init__(self, model: nn.Module, example: tuple | list | Mapping) -> None:
        config = getattr(model, "config", None)
        #: the classes of a classifier's labels (a Hugging Face config's num_labels), None when unknown
        self.num_labels = getattr(config, "num_labels", None) if config is not None else None
        self.keyword = isinstance(example, Mapping)
        items = list(example.items()) if self.keyword else list(enumerate(example))
        tensors = [(k, v) for k, v in items if isinstance(v, torch.Tensor)]
        if not tensors:
            raise ConslawError(f"the example input {type(example).__name__} holds no tensor",
                               "pass a tensor, a tuple of tensors or a dict such as {'input_ids': ids}")
        vocab = input_vocab(model)
        integer = [k for k, v in tensors if not torch.is_floating_point(v) and v.dtype != torch.bool
                   and not self._fixed_name(k)]
        token_key = "input_ids" if "input_ids" in integer else (integer[0] if integer else None)
        self.entries: list[InputEntry] = []
        for key, value in items:
            self.entries.append(self._entry(key, value, token_key, vocab))
        varying = [e for e in self.entries if e.kind != "fixed"]
        if not varying:
            raise ConslawError("every entry of the example input is fixed (masks, positions, constants): nothing "
                               "to sample", "pass the model's data input too, e.g. input_ids")
        self.main = varying[0]
        self.example_batch = self.main.value.shape[0]

    @staticmethod
    def _fixed_name(key) -> bool:
        return isinstance(key, str) and ("mask" in key or key in FIXED_NAMES)

    def _entry(self, key, value, token_key, vocab) -> InputEntry:
        if not isinstance(value, torch.Tensor) or value.dtype == torch.bool or self._fixed_name(key):
            return InputEntry(key, "fixed", value)
        if torch.is_floating_point(value):
            return InputEntry(key, "float", value.to(DTYPE))
        if key == token_key or (isinstance(key, str) and key.endswith("input_ids")):
            return InputEntry(key, "tokens", value, vocab if vocab is not None else int(value.max()) + 1)
        if key == "labels":
            return InputEntry(key, "tokens", value, self._label_range(value, vocab))
        if value.numel() == 0 or bool((value == value.reshape(-1)[0]).all()):
            return InputEntry(key, "fixed", value)
        return InputEntry(key, "tokens", value, int(value.max()) + 1)

    def _label_range(self, labels: torch.Tensor, vocab: int | None) -> int:
        if labels.dim() >= 2 and vocab is not None:
            return vocab
        if labels.dim() == 1 and isinstance(self.num_labels, int) and self.num_labels > int(labels.max()):
            return self.num_labels
        return int(labels.max()) + 1

    def target_mask(self, batch: int, length: int) -> torch.Tensor | None:
        """(batch, length) booleans, False where the targets are ignored: the decoder's attention mask, else the
        attention mask, when its length is the output's (None when the batch has neither)."""
        for e in self.entries:
            if e.key in ("decoder_attention_mask", "attention_mask") and isinstance(e.value, torch.Tensor) \
                    and e.value.dim() == 2 and e.value.shape[1] == length:
                if e.key == "attention_mask" and any(f.key == "decoder_attention_mask" for f in self.entries):
                    continue
                return self._fixed_value(e, batch) != 0
        return None

    def describe(self) -> str:
        """One line: how each entry is drawn."""
        def one(e: InputEntry) -> str:
            what = {"tokens": f"uniform in [0, {e.high})", "float": "Gaussian scale mixture",
                    "fixed": "fixed (the example's)"}[e.kind]
            return f"{e.key}: {what}"
        return "; ".join(one(e) for e in self.entries)

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """n inputs of every sampled entry, shaped like one example each: {str(key): (n, ...)}."""
        out = {}
        for e in self.entries:
            shape = tuple(e.value.shape[1:]) if e.kind != "fixed" else ()
            if e.kind == "tokens":
                out[str(e.key)] = torch.randint(0, e.high, (n, *shape), generator=generator, dtype=e.value.dtype)
            elif e.kind == "float":
                out[str(e.key)] = gaussian_inputs(n, shape, generator)
        return out

    def _fixed_value(self, e: InputEntry, batch: int):
        v = e.value
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == self.example_batch and \
                batch != self.example_batch:
            return v[torch.arange(batch) % self.example_batch]
        return v

    def call(self, sampled: Mapping[str, torch.Tensor]) -> tuple[tuple, dict]:
        """(args, kwargs) of one call: the sampled entries (batch first), the fixed ones repeated to that batch."""
        batch = sampled[str(self.main.key)].shape[0]
        values = [(e.key, sampled[str(e.key)] if e.kind != "fixed" else self._fixed_value(e, batch))
                  for e in self.entries]
        if self.keyword:
            return (), dict(values)
        return tuple(v for _, v in values), {}

    def example_call(self) -> tuple[tuple, dict]:
        """(args, kwargs) of the example itself (floating entries in float64)."""
        return self.call({str(e.key): e.value for e in self.entries if e.kind != "fixed"})

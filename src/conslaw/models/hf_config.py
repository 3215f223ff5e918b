"""A Hugging Face ``transformers`` model from a config JSON, with random init and an example batch (no download).

``conslaw laws --model-kind hf:gpt2 --config cfg.json`` (and ``hf:bert``,
``hf:llama``, ``hf:t5``, any ``model_type`` transformers knows, or ``hf:auto``
reading ``model_type`` from the JSON):

- the config: ``CONFIG_MAPPING[model_type](**json)``. The sizes must be in the
  JSON (``vocab_size``, the hidden size, layers, heads, the MLP width and the
  learned positions, under the model's own names such as GPT-2's ``n_embd``):
  transformers' defaults are the full-size model (GPT-2: 124M parameters);
- the class: the JSON's ``architectures[0]`` when given, else the natural head
  of the model type: an encoder-decoder's conditional generation, a
  decoder-only model's causal LM, an encoder's sequence classification, else
  the base model;
- the weights: ``torch.manual_seed(seed)`` then ``Class(config)`` (the global
  RNG restored after), in eval mode;
- the batch: ``input_ids = torch.randint(0, vocab_size, (batch, seq),
  generator=torch.Generator().manual_seed(seed))`` over the whole vocabulary,
  ``attention_mask`` of ones; an encoder-decoder also gets ``decoder_input_ids``
  (drawn next from the same generator); ``labels`` when asked (the ``model`` loss);
- the natural loss (:func:`natural_loss`): ``next_token`` for a causal LM,
  ``cross_entropy`` for sequence classification, token classification, masked
  LM and seq2seq (the decoder's logits against their targets), ``mse`` for a
  base model's hidden states.
"""

from __future__ import annotations

import difflib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConslawError

#: the sizes every config JSON must give (canonical names; the model's own aliases count)
REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
#: further sizes a model type's defaults would make large (learned positions, MLP width, head width); every
#: type whose config has an ``intermediate_size`` must give it too
EXTRA_REQUIRED = {"gpt2": ("max_position_embeddings",), "bert": ("max_position_embeddings",),
                  "t5": ("d_ff", "head_dim")}
DEFAULT_SEQ_LEN = 8
DEFAULT_BATCH = 2


@dataclass
class HFBuild:
    """A model built from a config, its example batch and its natural loss."""

    model: nn.Module
    batch: dict[str, torch.Tensor]
    loss: str
    description: str


def read_json(path: str | Path) -> dict:
    """The JSON object of a config file, or a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise ConslawError(f"config file {str(path)!r} does not exist", "pass the path of a JSON file (--config)")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConslawError(f"config file {str(path)!r} is not valid JSON: {exc}",
                           "write one JSON object, e.g. {\"n_layer\": 1, \"n_head\": 2, ...}") from exc
    if not isinstance(data, dict):
        raise ConslawError(f"config file {str(path)!r} holds a JSON {type(data).__name__}, expected an object",
                           "write one JSON object of config fields")
    return data


def _transformers():
    from ..vision import import_torchvision

    try:
        import_torchvision()  # transformers imports torchvision when it is installed
    except ImportError:
        pass
    try:
        import transformers
    except ImportError as exc:
        raise ConslawError("the hf: model kinds need the transformers package, which is not installed",
                           "pip install 'conslaw[models]' (or pip install transformers)") from exc
    return transformers


def config_from_json(model_type: str, data: dict, path: str):
    """The transformers config of ``model_type`` (``auto``: the JSON's ``model_type``) from ``data``."""
    from transformers import CONFIG_MAPPING

    given = data.get("model_type")
    if model_type == "auto":
        if not given:
            raise ConslawError(f"config {path!r} has no 'model_type', which hf:auto reads",
                               "add e.g. \"model_type\": \"gpt2\" to the JSON, or pass --model-kind hf:gpt2")
        model_type = given
    elif given and given != model_type:
        raise ConslawError(f"config {path!r} says model_type {given!r}, but the kind is hf:{model_type}",
                           f"pass --model-kind hf:{given} (or hf:auto), or fix model_type in the JSON")
    if model_type not in CONFIG_MAPPING:
        close = difflib.get_close_matches(model_type, list(CONFIG_MAPPING.keys()), n=3)
        raise ConslawError(f"transformers knows no model type {model_type!r}",
                           f"use one of {', '.join(close) if close else 'gpt2, bert, llama, t5, mistral, qwen2'}")
    config_class = CONFIG_MAPPING[model_type]
    aliases = getattr(config_class, "attribute_map", {}) or {}
    default = config_class()
    # the MLP width where the type has a field for it (Llama's default is 11 008)
    mlp = ("intermediate_size",) if isinstance(getattr(default, "intermediate_size", None), int) else ()
    missing = [name for name in dict.fromkeys((*REQUIRED, *mlp, *EXTRA_REQUIRED.get(model_type, ())))
               if name not in data and aliases.get(name) not in data]
    if missing:
        names = ", ".join(aliases.get(m, m) for m in missing)
        fields = ", ".join(f'"{aliases.get(m, m)}": N' for m in missing)
        raise ConslawError(f"config {path!r} for hf:{model_type} lacks {names}: transformers would use the sizes "
                           "of the full model (millions of parameters)",
                           f"add {fields} to the JSON "
                           "(small sizes: the analysis is for tiny configs)")
    known = set(default.to_dict()) | set(aliases)
    for key in data:
        if key not in known and key != "model_type" and not hasattr(default, key):  # hasattr: num_labels
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            warnings.warn(f"config key {key!r} is not a field of {config_class.__name__}: no layer reads it{hint}",
                          stacklevel=2)
    kwargs = {k: v for k, v in data.items() if k != "model_type"}
    try:
        return config_class(**kwargs)
    except Exception as exc:
        raise ConslawError(f"transformers refused config {path!r}: {type(exc).__name__}: {exc}",
                           "fix the config values") from exc


def model_class(config):
    """The class to build: the config's ``architectures[0]``, else the model type's natural head."""
    transformers = _transformers()
    from transformers.models.auto import modeling_auto as auto

    if config.architectures:
        name = config.architectures[0]
        cls = getattr(transformers, name, None)
        if cls is None:
            raise ConslawError(f"transformers has no class {name!r} (the config's architectures)",
                               "name a class of transformers, e.g. GPT2LMHeadModel, or drop 'architectures'")
        return cls
    mt = config.model_type
    if config.is_encoder_decoder and mt in auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        name = auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES[mt]
    elif mt in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        name = auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[mt]
    elif mt in auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        name = auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES[mt]
    elif mt in auto.MODEL_MAPPING_NAMES:
        name = auto.MODEL_MAPPING_NAMES[mt]
    else:
        raise ConslawError(f"no text model of type {mt!r} in transformers",
                           "name the class in the config's 'architectures'")
    return getattr(transformers, name)


def task_of(class_name: str) -> str:
    """``causal``, ``seq2seq``, ``sequence``, ``token``, ``masked`` or ``base`` from a transformers class name."""
    for suffix, task in (("ForCausalLM", "causal"), ("LMHeadModel", "causal"), ("ForConditionalGeneration", "seq2seq"),
                         ("ForSequenceClassification", "sequence"), ("ForTokenClassification", "token"),
                         ("ForMaskedLM", "masked")):
        if class_name.endswith(suffix):
            return task
    return "base"


#: the natural loss of each task
TASK_LOSS = {"causal": "next_token", "seq2seq": "cross_entropy", "sequence": "cross_entropy",
             "token": "cross_entropy", "masked": "cross_entropy", "base": "mse"}


def natural_loss(model: nn.Module, example) -> str | None:
    """``model`` when the batch has labels, else the loss of a transformers class's task (None: not transformers)."""
    if isinstance(example, dict) and "labels" in example:
        return "model"
    if not any(c.__module__.startswith("transformers.") for c in type(model).__mro__):
        return None
    return TASK_LOSS[task_of(type(model).__name__)]


def _positions(config) -> int | None:
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def example_batch(config, task: str, seq_len: int | None, batch_size: int | None, seed: int,
                  labels: bool) -> dict[str, torch.Tensor]:
    """input_ids over the whole vocabulary, a mask of ones; decoder ids for seq2seq; labels when asked."""
    limit = _positions(config)
    seq = seq_len if seq_len is not None else min(DEFAULT_SEQ_LEN, limit or DEFAULT_SEQ_LEN)
    batch = batch_size if batch_size is not None else DEFAULT_BATCH
    if seq < 1 or batch < 1:
        raise ConslawError(f"--seq-len {seq} and --batch-size {batch} must be >= 1", "pass positive sizes")
    if limit is not None and seq > limit:
        raise ConslawError(f"--seq-len {seq} is longer than the config's {limit} positions",
                           f"pass --seq-len {limit} or less, or raise the positions in the JSON")
    gen = torch.Generator().manual_seed(seed)
    vocab = config.vocab_size
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)
    out = {"input_ids": ids, "attention_mask": torch.ones(batch, seq, dtype=torch.long)}
    if task == "seq2seq":
        out["decoder_input_ids"] = torch.randint(0, vocab, (batch, seq), generator=gen)
    if labels:
        if task == "causal":
            out["labels"] = ids.clone()
        elif task in ("seq2seq", "masked"):
            out["labels"] = torch.randint(0, vocab, (batch, seq), generator=gen)
        elif task in ("sequence", "token"):
            shape = (batch,) if task == "sequence" else (batch, seq)
            out["labels"] = torch.randint(0, config.num_labels, shape, generator=gen)
        else:
            raise ConslawError("the loss 'model' needs a model that computes its loss from labels; the base model "
                               f"{config.model_type} returns hidden states only",
                               "use --loss mse, or name a head in the config's 'architectures'")
    return out


def build_hf(model_type: str, config_path: str, *, seq_len: int | None = None, batch_size: int | None = None,
             seed: int = 0, labels: bool = False) -> HFBuild:
    """The model of ``hf:MODEL_TYPE`` from ``config_path`` (random init from ``seed``), its batch and loss."""
    from . import seeded

    _transformers()
    data = read_json(config_path)
    config = config_from_json(model_type, data, str(config_path))
    cls = model_class(config)
    try:
        model = seeded(lambda: cls(config), seed).eval()
    except Exception as exc:
        raise ConslawError(f"transformers could not build {cls.__name__} from {str(config_path)!r}: "
                           f"{type(exc).__name__}: {exc}",
                           "fix the config values (e.g. the hidden size a multiple of the heads)") from exc
    task = task_of(cls.__name__)
    batch = example_batch(config, task, seq_len, batch_size, seed, labels)
    return HFBuild(model, batch, natural_loss(model, batch),
                   f"{cls.__name__} from {Path(config_path).name} (random init, seed {seed})")

"""One analysis of a model, shared by find_laws, discover and rebalance.

:func:`analyse` checks the model and its example input, makes a float64
analysis copy (the user's model is never touched), builds the loss-gradient
fields and traces the data flow. Dropout and stochastic depth (torchvision's
``StochasticDepth``, timm's ``DropPath``) are switched off in the copy (a random
mask makes the fields random); BatchNorm in training mode is patched with
``torch.func.replace_all_batch_norm_modules_`` so that the functional
transforms do not update running statistics (eval-mode BatchNorm keeps its
running statistics, which it only reads).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import replace_all_batch_norm_modules_

from ..errors import ConslawError
from ..fields import LossGradFields
from ..fields.losses import Loss
from ..fields.model_io import keep_float64, model_output
from ..params import DTYPE, ParamSpace
from ..resources import check_memory
from .export import export_graph
from .ops import DROPOUT
from .registry import HandlerRegistry
from .trace import Graph, parameter_aliases, trace

#: float attributes holding an attention dropout probability, set to 0 in the analysis copy
ATTENTION_DROPOUT = ("attention_dropout", "attn_dropout", "dropout_p", "dropout_prob")
#: stochastic depth modules (a whole residual branch dropped at random in training) and their drop-probability
#: attribute, set to 0 in the analysis copy: torchvision.ops.StochasticDepth, timm's DropPath
STOCHASTIC_DEPTH = {"StochasticDepth": "p", "DropPath": "drop_prob"}
#: above this many parameters, verify with 4 batches of 4 inputs (each is a float64 backward pass)
LARGE_D = 1_000_000


def analysis_copy(model: nn.Module) -> nn.Module:
    """A float64 copy, dropout and stochastic depth off, BatchNorm safe for torch.func; the original untouched."""
    clone = copy.deepcopy(model).to(DTYPE)
    config = getattr(clone, "config", None)
    if config is not None and getattr(config, "use_cache", None):
        config.use_cache = False  # Hugging Face: no key/value cache in the outputs
    for m in clone.modules():
        for attr in ATTENTION_DROPOUT:  # dropout probabilities stored as floats (Hugging Face attention)
            if isinstance(getattr(m, attr, None), float):
                setattr(m, attr, 0.0)
        if isinstance(m, DROPOUT):
            m.p = 0.0
        attr = STOCHASTIC_DEPTH.get(type(m).__name__)
        if attr is not None and isinstance(getattr(m, attr, None), float):
            setattr(m, attr, 0.0)
        if isinstance(m, nn.MultiheadAttention):
            m.dropout = 0.0
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            replace_all_batch_norm_modules_(m)  # batch statistics, no running-stat updates
    return clone


def check_model(model: nn.Module, example_input) -> None:
    """A clear error unless ``model`` is a module with float parameters and ``example_input`` a batch of >= 2."""
    if not isinstance(model, nn.Module):
        raise ConslawError(f"expected an nn.Module, got {type(model).__name__}", "pass the model object")
    params = list(model.named_parameters())
    if not params:
        raise ConslawError(f"{type(model).__name__} has no parameters: there is nothing to conserve",
                           "pass a model with trainable parameters")
    bad = [n for n, p in params if not torch.is_floating_point(p)]
    if bad:
        raise ConslawError(f"parameters {bad} are not floating point", "gradient flow needs float parameters")
    if isinstance(example_input, Mapping | tuple | list):
        tensors = [v for v in (example_input.values() if isinstance(example_input, Mapping) else example_input)
                   if isinstance(v, torch.Tensor)]
        if not tensors:
            raise ConslawError(f"the example input ({type(example_input).__name__}) holds no tensor",
                               "pass a batch of inputs, e.g. {'input_ids': ids, 'attention_mask': mask}")
        main = tensors[0]
    elif isinstance(example_input, torch.Tensor):
        main = example_input
    else:
        raise ConslawError(f"expected an example input tensor, tuple or dict of tensors, got "
                           f"{type(example_input).__name__}",
                           "pass a batch of inputs, e.g. torch.randn(2, 3, 32, 32) or {'input_ids': ids}")
    if main.dim() < 2 or main.shape[0] < 2:
        raise ConslawError(f"the example input needs a batch dimension of size >= 2, got shape "
                           f"{tuple(main.shape)}", "pass a batch of at least 2 inputs")


def as_float64(example_input):
    """The example input with its floating tensors in float64 (a tensor, tuple or dict; the rest as it is)."""
    def one(v):
        return v.to(DTYPE) if isinstance(v, torch.Tensor) and torch.is_floating_point(v) else v
    if isinstance(example_input, Mapping):
        return {k: one(v) for k, v in example_input.items()}
    if isinstance(example_input, tuple | list):
        return tuple(one(v) for v in example_input)
    return one(example_input)


def call_args(example) -> tuple[tuple, dict]:
    """(args, kwargs) of calling a model on ``example`` (a tensor, a tuple of positional inputs, a dict)."""
    if isinstance(example, Mapping):
        return (), dict(example)
    if isinstance(example, tuple | list):
        return tuple(example), {}
    return (example,), {}


def describe_input(example) -> str:
    """Shapes of the example input, for messages."""
    def one(v):
        return str(tuple(v.shape)) if isinstance(v, torch.Tensor) else repr(v)
    if isinstance(example, Mapping):
        return "{" + ", ".join(f"{k}: {one(v)}" for k, v in example.items()) + "}"
    if isinstance(example, tuple | list):
        return "(" + ", ".join(one(v) for v in example) + ")"
    return f"of shape {one(example)}"


@dataclass
class ModelAnalysis:
    """The float64 copy of a model, its loss-gradient fields, theta, and (when traced) its graph."""

    model: nn.Module
    example: torch.Tensor
    fields: LossGradFields
    theta: torch.Tensor
    large: bool
    graph: Graph | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def space(self) -> ParamSpace:
        """The parameter space (trainable parameters of the model)."""
        return self.fields.space

    @property
    def aliases(self) -> dict[str, str]:
        """Every parameter name, tied aliases included, -> its canonical name (:func:`.trace.parameter_aliases`)."""
        return self.graph.aliases if self.graph is not None else parameter_aliases(self.model)

    def param_name(self, module: str, attr: str = "weight") -> str | None:
        """Canonical name of parameter ``{module}.{attr}`` (GPT-2: ``lm_head.weight`` -> ``transformer.wte.weight``).

        Args:
            module: a module's qualified name.
            attr: the parameter's attribute (``weight``, ``bias``).
        """
        return self.aliases.get(f"{module}.{attr}" if module else attr)


FRONT_ENDS = ("auto", "fx", "export")


def build_graph(work: nn.Module, example, leaf_types: tuple[type, ...],
                front_end: str = "auto") -> tuple[Graph, list[str]]:
    """The data-flow graph: torch.fx tracing, and the torch.export front end when fx fails; notes say which.

    ``front_end``: ``auto`` (fx, then export), ``fx`` or ``export`` only.
    """
    if front_end not in FRONT_ENDS:
        raise ConslawError(f"front_end must be one of {FRONT_ENDS}, got {front_end!r}", "use 'auto'")
    if front_end == "export":
        args, kwargs = call_args(example)
        graph = export_graph(work, args, kwargs, leaf_types)
        return graph, ["graph: torch.export front end (asked for)", *graph.notes]
    if front_end == "fx":
        graph = trace(work, example, leaf_types)
        return graph, list(graph.notes)
    try:
        graph = trace(work, example, leaf_types)
        return graph, list(graph.notes)
    except ConslawError as fx_error:
        args, kwargs = call_args(example)
        try:
            graph = export_graph(work, args, kwargs, leaf_types)
        except ConslawError as export_error:
            raise ConslawError(f"{fx_error.problem}; and {export_error.problem}", export_error.fix) from export_error
        reason = fx_error.problem.split(": ", 1)[-1][:200]
        return graph, [f"graph: torch.fx could not trace the model ({reason}); used the torch.export front end",
                       *graph.notes]


def analysis_estimate(D: int, batches: int = 6) -> int:
    """Rough peak bytes of analysing a model with D parameters: float64 copies and loss gradients.

    The float64 analysis copy and its gradient buffers (3 D), the loss gradients at two verification
    points (2 x batches x D) and the law index structures (about 4 D): 8 bytes each.
    """
    return 8 * D * (3 + 2 * batches + 4)


def analyse(model: nn.Module, example_input: torch.Tensor | tuple | Mapping, loss: str | Loss | Callable = "mse",
            registry: HandlerRegistry | None = None, traced: bool = True, max_memory: float | None = None,
            batches: int = 6, front_end: str = "auto") -> ModelAnalysis:
    """Check, copy, build the fields of, and (``traced``) trace ``model`` (see the module docstring).

    Args:
        model: the user's model (left untouched).
        example_input: a batch of inputs, batch first: a tensor, a tuple of positional inputs, or a dict of
            keyword inputs (Hugging Face ``{'input_ids': ..., 'attention_mask': ...}``).
        loss: ``mse``, ``cross_entropy``, a :class:`conslaw.fields.losses.Loss` or a callable ``loss(output, target)``.
        registry: the module handlers (their types are leaves of the trace).
        traced: also trace the data flow (needed to find laws, not to discover them).
        max_memory: GB allowed (the memory available now when None): refuse larger models before any work.
        batches: loss gradients per verification point (for the memory estimate).
        front_end: the graph front end, ``auto`` (torch.fx, else torch.export), ``fx`` or ``export``.
    """
    check_model(model, example_input)
    D = sum(p.numel() for p in model.parameters() if p.requires_grad)
    check_memory(analysis_estimate(D, batches), f"analysing {type(model).__name__} (D = {D:,} parameters)",
                 "analyse a smaller model or a part of it", max_memory)
    work = analysis_copy(model)
    example = as_float64(example_input)
    args, kwargs = call_args(example)
    try:
        with torch.no_grad(), keep_float64():
            model_output(work(*args, **kwargs))
    except ConslawError:
        raise
    except Exception as exc:
        raise ConslawError(f"the example input {describe_input(example_input)} does not run through "
                           f"{type(model).__name__}: {type(exc).__name__}: {exc}".replace("\n", " "),
                           "pass an input of the shape the model expects, batch first") from exc
    large = sum(p.numel() for p in work.parameters()) > LARGE_D
    fields = LossGradFields(work, example, loss, batch=4 if large else 8)
    notes = [] if fields.inputs is None else [f"inputs: {fields.inputs.describe()}"]
    graph = None
    if traced:
        graph, graph_notes = build_graph(work, example, (registry or HandlerRegistry.default()).leaf_types(work),
                                          front_end)
        notes += graph_notes
    theta = fields.theta()
    if large:
        share_storage(work, fields.space, theta)
    return ModelAnalysis(work, example, fields, theta, large, graph, notes)


def share_storage(work: nn.Module, space, theta: torch.Tensor) -> None:
    """Make the analysis copy's parameters views of theta: one float64 copy of the parameters, not two.

    Nothing writes to either (the fields run on thetas passed in, perturbed points are new tensors), so the
    copy's parameters keep their values; a large model saves D floats (0.8 GB at 100M parameters).
    """
    with torch.no_grad():
        for name, view in space.unflatten(theta).items():
            work.get_parameter(name).data = view

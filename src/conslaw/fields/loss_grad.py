"""Loss-gradient fields of a real model: chi_Z(theta) = grad L_Z(theta) (Prop 2.3, Sec 4.4).

W_theta is the span of the gradients of the model's own loss over random
batches Z = (inputs, targets). Evaluated on the model given (usually a float64
analysis copy, see :func:`conslaw.nn.analysis.analysis_copy`) through
``torch.func.functional_call`` with its buffers passed explicitly. Tied
parameters (GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``) are one
parameter: ``named_parameters()`` lists it once and ``functional_call`` ties
the aliases to it.

Inputs may be a tensor, a tuple or a dict of tensors (Hugging Face
``input_ids``, ``attention_mask``, ...), outputs a tensor, a tuple or a
``ModelOutput`` (:mod:`conslaw.fields.model_io`); the losses are those of
:mod:`conslaw.fields.losses` or a callable ``loss(output, target)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._pytree import tree_map

from ..batching import vmap_or_loop
from ..composite import composite_ops
from ..errors import ConslawError
from ..params import ParamSpace
from .base import FieldSource
from .custom_functions import custom_function_nodes
from .inputs import gaussian_inputs
from .losses import BUILTIN_LOSSES, IGNORE_INDEX, Loss, model_loss_is_softmax, resolve_loss
from .model_io import ModelInputs, input_vocab, keep_float64, model_output, returned_loss

#: the names of the built-in losses (:data:`conslaw.fields.losses.BUILTIN_LOSSES`)
LOSSES = tuple(BUILTIN_LOSSES)
#: above this D, fields are evaluated one by one with plain autograd instead of vmap
VMAP_MAX_D = 200_000


def _keys(example: Any) -> str:
    if isinstance(example, Mapping):
        return f"a dict with keys {', '.join(map(str, example))}"
    return f"a {type(example).__name__}"


class LossGradFields(FieldSource):
    """chi_Z(theta) = grad L_Z(theta) for random batches Z = (inputs, targets) of the model's loss.

    The model runs inside :func:`conslaw.composite.composite_ops`, so that
brackets through LayerNorm, BatchNorm and instance norm are right.
Floating inputs are drawn from a Gaussian scale mixture (:mod:`conslaw.fields.inputs`),
    integer inputs (token ids) uniformly below the smallest embedding size.

    Args:
        model: the module (its parameters that require gradients are theta).
        example_input: one batch of inputs (batch first), for the input shape and dtype: a tensor, a tuple of
            positional inputs or a dict of keyword inputs (:class:`conslaw.fields.model_io.ModelInputs`).
        loss: ``mse``, ``cross_entropy`` (over (batch, classes) or (batch, seq, vocab) outputs), ``next_token``
            (a causal LM's), ``model`` (the loss the model returns; the example carries ``labels``), a
            :class:`conslaw.fields.losses.Loss`, or a callable ``loss(output, target)`` (Gaussian targets).
        batch: inputs per sampled field.
    """

    label = "loss-gradient"
    oversample = 3.0
    gradient = True  # chi_Z = grad_theta L_Z (False when the model has a custom autograd.Function: see __init__)

    def __init__(self, model: nn.Module, example_input: torch.Tensor | tuple | Mapping,
                 loss: str | Loss | Callable = "mse", batch: int = 8) -> None:
        self.loss_fn = resolve_loss(loss)
        self.model = model
        self.space = ParamSpace.from_module(model)
        self.names = self.space.names
        self.buffers = dict(model.named_buffers())
        self.loss = self.loss_fn.name
        self.batch = batch
        self.example = example_input
        #: the model routes on values (a MoE block): vmap refuses it, fields are taken one by one
        #: (:func:`conslaw.batching.vmap_or_loop` sets it on the first refusal)
        self.data_dependent = False
        if self.loss_fn.from_model and not (isinstance(example_input, Mapping) and "labels" in example_input):
            raise ConslawError(f"the loss {self.loss!r} is the one the model returns, which needs 'labels' in the "
                               f"example batch; got {_keys(example_input)}",
                               "add labels to the batch dict (a causal LM: labels = input_ids), or use the loss "
                               "next_token / cross_entropy")
        if self.loss_fn.from_model and self.loss_fn.softmax and not model_loss_is_softmax(model, example_input):
            self.loss_fn = replace(self.loss_fn, softmax=False)  # a regression / multi-label head: no Prop 3.11
        #: structured inputs (tuple or dict), None for a tensor
        self.inputs = None if isinstance(example_input, torch.Tensor) else ModelInputs(model, example_input)
        self.integer_input = self.inputs is None and not torch.is_floating_point(example_input)
        if self.integer_input:
            # token ids: below the input embedding's vocabulary (a Hugging Face model says which it is), else
            # below the smallest embedding, else below the example's maximum + 1
            embeddings = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
            vocab = input_vocab(model)
            self.high = vocab if vocab is not None else min(embeddings) if embeddings else int(example_input.max()) + 1
        #: run under keep_float64() only when the model casts to a lower precision (a mode costs time per op)
        self.keep_float64 = False  # the probe alone watches the first call
        # one probe forward (two inputs, with gradients: its graph is searched below)
        probe = keep_float64()
        leaf = self.space.flatten(dict(model.named_parameters())).detach().requires_grad_(True)
        with torch.enable_grad(), probe:
            out = self._forward(self.space.unflatten(leaf), self.sample_inputs(2, torch.Generator().manual_seed(0)))
        self.keep_float64 = probe.lowered
        self.output_shape = tuple(out.shape[1:])
        if self.loss_fn.check is not None:
            self.loss_fn.check(self.output_shape)
        #: custom autograd.Function nodes in the model's graph: their backward need not be the transpose of their
        #: forward derivative, so the fields are then not taken as gradients (forward-mode brackets only)
        self.custom_functions = custom_function_nodes(out)
        self.gradient = not self.custom_functions

    def theta(self) -> torch.Tensor:
        """The model's current parameters as a flat float64 vector."""
        return self.space.flatten(dict(self.model.named_parameters())).detach()

    def sample_inputs(self, n: int, generator: torch.Generator) -> torch.Tensor | dict[str, torch.Tensor]:
        """Draw n inputs shaped like one example (token ids or a Gaussian scale mixture; a dict when structured)."""
        if self.inputs is not None:
            return self.inputs.sample(n, generator)
        shape = tuple(self.example.shape[1:])
        if self.integer_input:
            return torch.randint(0, self.high, (n, *shape), generator=generator, dtype=self.example.dtype)
        return gaussian_inputs(n, shape, generator)

    def sample(self, n: int, generator: torch.Generator) -> Any:
        """Draw n batches (inputs, targets) of ``batch`` examples each.

        Token targets of a masked loss, and the token ``labels`` of the ``model`` loss, are -100 (ignored) where
        the batch's attention mask is 0 (as a padded batch is trained).
        """
        x = self.sample_inputs(n * self.batch, generator)
        y = self.loss_fn.targets(n * self.batch, self.output_shape, generator)
        x = tree_map(lambda t: t.reshape(n, self.batch, *t.shape[1:]), x)
        y = y.reshape(n, self.batch, *y.shape[1:])
        if self.loss_fn.masked:
            y = self._ignore_padding(y)
        if self.loss_fn.from_model and "labels" in x:
            x = {**x, "labels": self._ignore_padding(x["labels"])}
        return x, y

    def _ignore_padding(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, batch, seq) integer targets with -100 where the attention mask is 0 (others as they are)."""
        if self.inputs is None or tokens.dim() != 3 or torch.is_floating_point(tokens):
            return tokens
        mask = self.inputs.target_mask(self.batch, tokens.shape[-1])
        return tokens if mask is None else tokens.masked_fill(~mask, IGNORE_INDEX)

    def _forward(self, params: dict, x: torch.Tensor | Mapping) -> torch.Tensor:
        # composite normalizations: the native ones have wrong nested forward derivatives (conslaw.composite);
        # the math kernel of attention: the fused CPU kernels have no forward-mode derivative
        args, kwargs = ((x,), {}) if self.inputs is None else self.inputs.call(x)
        with composite_ops(), sdpa_kernel(SDPBackend.MATH), \
                keep_float64() if self.keep_float64 else contextlib.nullcontext():
            out = functional_call(self.model, {**params, **self.buffers}, args, kwargs)
        return returned_loss(out) if self.loss_fn.from_model else model_output(out)

    def _loss(self, params: dict, p: Any) -> torch.Tensor:
        """L_Z for parameters ``params`` (name -> tensor) and one batch Z = p = (inputs, targets)."""
        x, y = p
        return self.loss_fn.fn(self._forward(params, x), y)

    def loss_value(self, theta: torch.Tensor, p: Any) -> torch.Tensor:
        """L_Z(theta) for one batch Z = p = (inputs, targets)."""
        return self._loss(self.space.unflatten(theta), p)

    def field(self, theta: torch.Tensor, p: Any) -> torch.Tensor:
        """grad L_Z(theta), differentiated per parameter tensor and concatenated.

        The same numbers as ``grad`` of the loss of the flat theta; but there every parameter, a slice of
        theta, would back-propagate into a zero length-D vector of its own (SliceBackward), and on the
        small ViT (D = 17 000, 38 tensors) filling and summing those vectors took most of the time.
        """
        per_tensor = grad(lambda params: self._loss(params, p))(self.space.unflatten(theta))
        return self.space.flatten(per_tensor)

    def evaluate(self, theta: torch.Tensor, ps: Any) -> torch.Tensor:
        """Batched with vmap for small models, one by one (plain autograd) for large ones."""
        rows = self.rows(theta, ps)
        return rows if isinstance(rows, torch.Tensor) else torch.stack(list(rows))

    def rows(self, theta: torch.Tensor, ps: Any) -> torch.Tensor | Iterator[torch.Tensor]:
        """The fields of :meth:`evaluate`: an (n, D) tensor (vmap) up to ``VMAP_MAX_D`` parameters, else a generator
        of length-D fields computed one at a time by plain autograd (a large model then holds one field, not n)."""
        if self.space.D > VMAP_MAX_D:
            return (self._autograd_field(theta, tree_map(lambda a, k=k: a[k], ps)) for k in range(ps[1].shape[0]))
        return vmap_or_loop(lambda p: self.field(theta, p), self)(ps)  # a loop when a MoE block routes on values

    def _autograd_field(self, theta: torch.Tensor, p: Any) -> torch.Tensor:
        """grad L_Z(theta) by plain autograd with respect to each parameter's own leaf, then concatenated.

        Not with respect to theta itself: the backward of each slice of theta would fill a length-D
        zero vector, one per parameter (O(number of parameters x D) memory traffic)."""
        # views of theta as leaves (no copy: theta is not written to), each with its .grad a view of the output:
        # backward accumulates into it in place, so only one parameter's gradient is ever held besides the output
        out = torch.zeros_like(theta)
        params = {}
        for n, v in self.space.unflatten(theta).items():
            leaf = v.detach().requires_grad_(True)
            leaf.grad = out[self.space.slice(n)].view(v.shape)
            params[n] = leaf
        self._loss(params, p).backward()
        if any(leaf.grad is None or leaf.grad.data_ptr() != out[self.space.slice(n)].data_ptr()
               for n, leaf in params.items()):  # never seen; kept so that a torch change cannot go unnoticed
            return torch.cat([leaf.grad.reshape(-1) if leaf.grad is not None else torch.zeros(leaf.numel(),
                              dtype=theta.dtype) for leaf in params.values()])
        return out

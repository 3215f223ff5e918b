"""Registry from module classes to law handlers (extensible by users).

A handler analyses a module as a whole (it is a leaf of the traced graph):
``laws(name, module, space, findings)`` adds its internal laws, and
``output_carrier(name, module, space)`` says which affine parameters carry
each output unit (for the rescaling laws with the modules that consume its
output), or None. Built in: nn.MultiheadAttention, nn.TransformerEncoderLayer,
nn.TransformerEncoder.

>>> from conslaw.nn import Handler, register_handler
>>> class MyBlockHandler(Handler):
...     def laws(self, name, module, space, findings):
...         ...  # append ModuleLaw objects to findings.laws
>>> register_handler(MyBlock, MyBlockHandler())   # doctest: +SKIP
"""

from __future__ import annotations

from torch import nn

from ..errors import ConslawError
from ..params import ParamSpace
from .laws_nn import Findings, balance_law, unit_slot
from .patterns import Carrier, attention_laws, incoming_slots, is_relu


class Handler:
    """Base class: no internal laws, no output carrier."""

    def laws(self, name: str, module: nn.Module, space: ParamSpace, findings: Findings) -> None:
        return None

    def output_carrier(self, name: str, module: nn.Module, space: ParamSpace) -> Carrier | None:
        return None


class MultiheadAttentionHandler(Handler):
    def laws(self, name, module, space, findings):
        attention_laws(space, name, module, findings)


class TransformerEncoderLayerHandler(Handler):
    """Attention laws, FFN neuron laws (ReLU), and LayerNorm rescaling laws of pre-LN layers."""

    def laws(self, name, module, space, findings):
        attention_laws(space, f"{name}.self_attn", module.self_attn, findings)
        l1, l2 = f"{name}.linear1", f"{name}.linear2"
        if is_relu(module.activation):
            for k in range(module.linear1.out_features):
                findings.laws.append(balance_law(f"{l1}[{k}] -> {l2}", [unit_slot(space, f"{l2}.weight", 1, k)],
                                                 incoming_slots(space, l1, k), "rescaling", l1))
        else:
            findings.notes.append(f"{name}: activation {getattr(module.activation, '__name__', module.activation)}"
                                  " is not positively homogeneous: no rescaling law in its feed-forward block")
        if module.norm_first:
            attn = module.self_attn
            cols = ["in_proj_weight"] if attn._qkv_same_embed_dim else ["q_proj_weight", "k_proj_weight",
                                                                       "v_proj_weight"]
            for k in range(attn.embed_dim):
                out = [unit_slot(space, f"{name}.self_attn.{c}", 1, k) for c in cols]
                findings.laws.append(balance_law(f"{name}.norm1[{k}] -> self_attn", out,
                                                 incoming_slots(space, f"{name}.norm1", k), "rescaling",
                                                 f"{name}.norm1"))
            for k in range(module.linear1.in_features):
                findings.laws.append(balance_law(f"{name}.norm2[{k}] -> linear1",
                                                 [unit_slot(space, f"{l1}.weight", 1, k)],
                                                 incoming_slots(space, f"{name}.norm2", k), "rescaling",
                                                 f"{name}.norm2"))

    def output_carrier(self, name, module, space):
        if module.norm_first:
            return None
        norm = f"{name}.norm2"
        return Carrier(norm, module.norm2.normalized_shape[0], -1, lambda k: incoming_slots(space, norm, k),
                       mixable=False)


class TransformerEncoderHandler(Handler):
    def laws(self, name, module, space, findings):
        for i, layer in enumerate(module.layers):
            TransformerEncoderLayerHandler().laws(f"{name}.layers.{i}", layer, space, findings)
        last = len(module.layers) - 1
        if module.layers[last].norm_first and module.norm is None:
            return
        if not module.layers[last].norm_first and module.norm is not None:
            findings.notes.append(f"{name}: the final norm follows a LayerNorm; no law between them is named")

    def output_carrier(self, name, module, space):
        if module.norm is not None:
            norm = f"{name}.norm"
            return Carrier(norm, module.norm.normalized_shape[0], -1, lambda k: incoming_slots(space, norm, k),
                           mixable=False)
        last = len(module.layers) - 1
        return TransformerEncoderLayerHandler().output_carrier(f"{name}.layers.{last}", module.layers[last], space)


HANDLERS: dict[type, Handler] = {
    nn.MultiheadAttention: MultiheadAttentionHandler(),
    nn.TransformerEncoderLayer: TransformerEncoderLayerHandler(),
    nn.TransformerEncoder: TransformerEncoderHandler(),
}


def register_handler(module_type: type, handler: Handler) -> None:
    """Treat ``module_type`` as a leaf analysed by ``handler`` (its own laws and output carrier)."""
    if not isinstance(module_type, type) or not issubclass(module_type, nn.Module):
        raise ConslawError(f"register_handler needs an nn.Module subclass, got {module_type!r}",
                           "pass the class itself, e.g. register_handler(MyBlock, MyHandler())")
    if not isinstance(handler, Handler):
        raise ConslawError(f"the handler must be a conslaw.nn.Handler, got {type(handler).__name__}",
                           "subclass conslaw.nn.Handler and override laws() / output_carrier()")
    HANDLERS[module_type] = handler


def handler_for(module: nn.Module) -> Handler | None:
    for cls in type(module).__mro__:
        if cls in HANDLERS:
            return HANDLERS[cls]
    return None


def leaf_types() -> tuple[type, ...]:
    return tuple(HANDLERS)

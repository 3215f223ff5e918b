"""Handlers: modules analysed as a whole (leaves of the traced graph), with their own laws.

A handler's ``laws(name, module, space, findings)`` adds the module's internal
laws, and ``output_carrier(name, module, space)`` says which affine parameters
carry each output unit (for the rescaling laws with the modules that consume
its output), or None. Built in: nn.MultiheadAttention, nn.TransformerEncoderLayer,
nn.TransformerEncoder (their forward has control flow that torch.fx cannot trace).
"""

from __future__ import annotations

from torch import nn

from ..laws import balance_law, unit_slot
from ..params import ParamSpace
from .attention import MHALayout, incoming_rows, mha_laws
from .carriers import Carrier
from .findings import Findings
from .ops import is_relu


class Handler:
    """Base class of module handlers: no internal laws, no output carrier. Override either method."""

    def laws(self, name: str, module: nn.Module, space: ParamSpace, findings: Findings) -> None:
        """Append the module's internal laws to ``findings.laws``.

        Args:
            name: the module's qualified name in the model.
            module: the module.
            space: the model's parameter space.
            findings: where laws, warnings and notes go.
        """
        return None

    def output_carrier(self, name: str, module: nn.Module, space: ParamSpace) -> Carrier | None:
        """The parameters carrying each output unit of the module, or None.

        Args:
            name: the module's qualified name in the model.
            module: the module.
            space: the model's parameter space.
        """
        return None


class MultiheadAttentionHandler(Handler):
    """Per-head attention laws of ``nn.MultiheadAttention`` (Cor 3.9, 3.10)."""

    def laws(self, name, module, space, findings):
        """Per-head Q Q^T - K K^T and V V^T - O^T O, key-bias zero gradients."""
        mha_laws(space, name, module, findings)


def _norm_carrier(space: ParamSpace, norm: str, units: int) -> Carrier:
    return Carrier(norm, units, -1, lambda k: incoming_rows(space, norm, k), mixable=False)


class TransformerEncoderLayerHandler(Handler):
    """Attention laws, FFN neuron laws (ReLU), and LayerNorm rescaling laws of pre-LN layers."""

    def laws(self, name, module, space, findings):
        """Attention, feed-forward neurons (ReLU only) and, pre-LN, norm -> projection rescalings."""
        mha_laws(space, f"{name}.self_attn", module.self_attn, findings)
        l1, l2 = f"{name}.linear1", f"{name}.linear2"
        if is_relu(module.activation):
            for k in range(module.linear1.out_features):
                findings.laws.append(balance_law(f"{l1}[{k}] -> {l2}", [unit_slot(space, f"{l2}.weight", 1, k)],
                                                 incoming_rows(space, l1, k), family="rescaling", module=l1,
                                                 unit=(k,)))
        else:
            findings.notes.append(f"{name}: activation {getattr(module.activation, '__name__', module.activation)}"
                                  " is not positively homogeneous: no rescaling law in its feed-forward block")
        if module.norm_first:
            readers = {"norm1": ("self_attn", MHALayout.of(f"{name}.self_attn", module.self_attn).input_weights()),
                       "norm2": ("linear1", [f"{l1}.weight"])}
            for norm, (target, weights) in readers.items():
                for k in range(getattr(module, norm).normalized_shape[0]):
                    findings.laws.append(balance_law(
                        f"{name}.{norm}[{k}] -> {target}", [unit_slot(space, w, 1, k) for w in weights],
                        incoming_rows(space, f"{name}.{norm}", k), family="rescaling", module=f"{name}.{norm}",
                        unit=(k,)))

    def output_carrier(self, name, module, space):
        """Post-LN: the affine of norm2 carries the output units."""
        if module.norm_first:
            return None
        return _norm_carrier(space, f"{name}.norm2", module.norm2.normalized_shape[0])


class TransformerEncoderHandler(Handler):
    """Every layer's laws; the output carrier of the final norm or of the last layer."""

    def laws(self, name, module, space, findings):
        """The laws of every layer."""
        for i, layer in enumerate(module.layers):
            TransformerEncoderLayerHandler().laws(f"{name}.layers.{i}", layer, space, findings)
        if not module.layers[-1].norm_first and module.norm is not None:
            findings.notes.append(f"{name}: the final norm follows a LayerNorm; no law between them is named")

    def output_carrier(self, name, module, space):
        """The final norm's affine, else the last layer's carrier."""
        if module.norm is not None:
            return _norm_carrier(space, f"{name}.norm", module.norm.normalized_shape[0])
        last = len(module.layers) - 1
        return TransformerEncoderLayerHandler().output_carrier(f"{name}.layers.{last}", module.layers[last], space)

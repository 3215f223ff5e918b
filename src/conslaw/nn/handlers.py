"""Handlers: modules analysed as a whole (leaves of the traced graph), with their own laws.

A handler's ``laws(name, module, space, findings)`` adds the module's internal
laws, and ``output_carrier(name, module, space)`` says which affine parameters
carry each output unit (for the rescaling laws with the modules that consume
its output), or None. Built in: nn.MultiheadAttention, nn.TransformerEncoderLayer,
nn.TransformerEncoder (their forward has control flow that torch.fx cannot trace).
"""

from __future__ import annotations

from torch import nn

from ..laws import Law, Slot, balance_law, unit_slot
from ..params import ParamSpace
from .attention import MHALayout, incoming_rows, mha_laws
from .carriers import Carrier
from .findings import Findings
from .ops import is_relu
from .translation import translation_laws


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

        if not module.norm_first:
            post_ln_laws(name, module, space, findings)

    def output_carrier(self, name, module, space):
        """Post-LN: the affine of norm2 carries the output units."""
        if module.norm_first:
            return None
        return _norm_carrier(space, f"{name}.norm2", module.norm2.normalized_shape[0])


def post_ln_laws(name: str, layer: nn.TransformerEncoderLayer, space: ParamSpace, findings: Findings) -> None:
    """Laws a post-LN layer owes to its LayerNorms: x -> y = norm1(x + sa(x)) -> norm2(y + ff(y)).

    - ``translation``: out_proj's and linear2's outputs enter only a sum that a LayerNorm
      normalizes, which removes a shift shared by all features: their column sums and bias
      sums are conserved (exact);
    - ``scale-invariance``: with a ReLU feed-forward block, scaling norm1's affine, linear1's
      and linear2's biases by c > 0 scales norm2's input by c, which norm2 removes up to its
      eps: |norm1.weight|^2 + |norm1.bias|^2 + |linear1.bias|^2 + |linear2.bias|^2 is
      conserved approximately (exactly at eps = 0).
    """
    out_proj, l1, l2 = f"{name}.self_attn.out_proj", f"{name}.linear1", f"{name}.linear2"
    translation_laws(space, out_proj, layer.self_attn.embed_dim, f"{out_proj}.bias" in space.shapes,
                     f"shift removed by {name}.norm1", findings)
    translation_laws(space, l2, layer.linear2.in_features, f"{l2}.bias" in space.shapes,
                     f"shift removed by {name}.norm2", findings)
    scaled = [f"{name}.norm1.weight", f"{name}.norm1.bias", f"{l1}.bias", f"{l2}.bias"]
    if is_relu(layer.activation) and all(p in space.shapes for p in scaled):
        slots = [unit_slot(space, p, 0, slice(0, space.shapes[p][0])) for p in scaled]
        findings.laws.append(balance_law(f"{name}.norm2 input scale", slots, [], family="scale-invariance",
                                         module=f"{name}.norm2", approximate_cause=(
                                             f"LayerNorm eps={layer.norm2.eps:g}: scale invariant only up to "
                                             "O(eps / variance)")))


def inner_input_scale_law(previous: str, name: str, layer: nn.TransformerEncoderLayer, space: ParamSpace,
                          findings: Findings) -> None:
    """Post-LN layer i > 0: its input is norm2 of layer i - 1. Scaling that affine by c > 0, the layer's query and
    key rows by 1 / c and its value and output biases by c scales norm1's input x + sa(x) by c, which norm1
    removes up to its eps: |norm2_{i-1} affine|^2 + |b_v|^2 + |b_o|^2 - |Q|^2 - |K|^2 is conserved approximately
    (exactly at eps = 0), as the first layer's input-scale law (:func:`conslaw.nn.embeddings.input_scale_law`)."""
    attn = layer.self_attn
    if not attn._qkv_same_embed_dim:
        return
    layout = MHALayout.of(f"{name}.self_attn", attn)
    e = layout.embed_dim
    affine = [f"{previous}.norm2.weight", f"{previous}.norm2.bias"]
    if layout.bias is None or f"{layout.name}.out_proj.bias" not in space.shapes or \
            not all(p in space.shapes for p in affine):
        return
    carriers = [unit_slot(space, p, 0, slice(0, e)) for p in affine]
    findings.laws.append(norm1_input_scale_law(space, layout, layer, name, carriers))


def norm1_input_scale_law(space: ParamSpace, layout: MHALayout, layer: nn.TransformerEncoderLayer, name: str,
                          carriers: list[Slot]) -> Law:
    """|carriers|^2 + |b_v|^2 + |b_o|^2 - |Q|^2 - |K|^2: scaling what writes norm1's input (``carriers``) and
    the value and output biases by c > 0 and the query and key rows by 1 / c scales x + sa(x) by c, which
    norm1 removes up to its eps (approximate; exact at eps = 0)."""
    e = layout.embed_dim
    plus = [*carriers, unit_slot(space, layout.bias, 0, slice(2 * e, 3 * e)),
            unit_slot(space, f"{layout.name}.out_proj.bias", 0, slice(0, e))]
    minus = [unit_slot(space, layout.weight("q")[0], 0, slice(0, 2 * e))]
    return balance_law(f"{name}.norm1 input scale", plus, minus, family="scale-invariance", module=f"{name}.norm1",
                       approximate_cause=f"LayerNorm eps={layer.norm1.eps:g}: scale invariant only up to "
                                         "O(eps / variance)")


class TransformerEncoderHandler(Handler):
    """Every layer's laws; the output carrier of the final norm or of the last layer."""

    def laws(self, name, module, space, findings):
        """The laws of every layer."""
        for i, layer in enumerate(module.layers):
            TransformerEncoderLayerHandler().laws(f"{name}.layers.{i}", layer, space, findings)
            if i and not layer.norm_first and not module.layers[i - 1].norm_first:
                inner_input_scale_law(f"{name}.layers.{i - 1}", f"{name}.layers.{i}", layer, space, findings)
        if not module.layers[-1].norm_first and module.norm is not None:
            findings.notes.append(f"{name}: the final norm follows a LayerNorm; no law between them is named")

    def output_carrier(self, name, module, space):
        """The final norm's affine, else the last layer's carrier."""
        if module.norm is not None:
            return _norm_carrier(space, f"{name}.norm", module.norm.normalized_shape[0])
        last = len(module.layers) - 1
        return TransformerEncoderLayerHandler().output_carrier(f"{name}.layers.{last}", module.layers[last], space)

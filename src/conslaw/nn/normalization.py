"""Families of layers feeding a normalization: ``scale-invariance`` (approximate) and LayerNorm ``translation``.

Normalizations: BatchNorm (training), LayerNorm, GroupNorm, RMSNorm (:mod:`conslaw.nn.norms`).

Weights (and bias) feeding a normalization that uses batch (or layer)
statistics are scale invariant up to its eps: the squared norm of each
normalized unit is conserved *approximately*, with the eps as the stated
cause; a bias whose effect the normalization removes has zero gradient (each
entry is conserved). A Linear feeding a LayerNorm over its outputs also has
exact translation laws (the LayerNorm removes the mean): :mod:`conslaw.nn.shift` names them;
a Linear feeding an RMSNorm has none (the RMSNorm keeps the mean). A Conv feeding timm's
LayerNorm2d (channels normalized at every position): per input coordinate (c, i, j) of its filters,
sum_o W[o, c, i, j], and its bias sum (exact), and its scale invariance (approximate); the same for a
conv whose channels a permute moves to the last axis before an ``nn.LayerNorm(C)`` (torchvision ConvNeXt),
and for a grouped (depthwise) conv only the bias sum (:func:`conslaw.nn.shift.conv_writer_slots`).
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from ..laws import balance_law, coordinate_law, linear_law, unit_slot
from ..params import ParamSpace
from .findings import Findings
from .norms import is_feature_norm, is_layernorm2d, is_rmsnorm, rms_eps
from .ops import BATCHNORM, CONV
from .shift import conv_writer_slots
from .tags import data_args, is_movement, run_chain
from .trace import Graph


def normalization_laws(graph: Graph, space: ParamSpace, findings: Findings) -> None:
    """Scale invariances (approximate, cause: eps) and LayerNorm translations of layers feeding a normalization."""
    for node in graph.nodes:
        m = graph.module_of(node)
        if not isinstance(m, (nn.Linear, *CONV)) or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        norm = graph.module_of(user) if user.op == "call_module" else None
        through_permute = channels_last_norm(graph, node) if isinstance(m, CONV) else None
        if through_permute is not None:
            user, norm = through_permute, graph.module_of(through_permute)
        if not isinstance(norm, (*BATCHNORM, nn.LayerNorm, nn.GroupNorm)) and not is_rmsnorm(norm):
            continue
        name, has_bias = node.target, f"{node.target}.bias" in space.shapes
        eps = rms_eps(norm) if is_rmsnorm(norm) else norm.eps
        cause = (f"{type(norm).__name__} eps={eps:g}: the normalization is scale invariant only up to "
                 "O(eps / variance)")

        with_bias = has_bias and (isinstance(norm, nn.LayerNorm) or is_rmsnorm(norm))

        def invariance(label: str, units: int | slice, unit: tuple = (), name=name, by=user.target, cause=cause,
                       with_bias=with_bias):
            slots = [unit_slot(space, f"{name}.weight", 0, units)]
            if with_bias:
                slots.append(unit_slot(space, f"{name}.bias", 0, units))
            findings.laws.append(balance_law(f"{label} (normalized by {by})", slots, [], family="scale-invariance",
                                             module=name, unit=unit, approximate_cause=cause))

        if isinstance(norm, BATCHNORM):
            if not norm.training and norm.track_running_stats:
                findings.warnings.append(
                    f"{user.target} is a BatchNorm in eval mode: it uses running statistics, so the scale "
                    f"invariance of {name} is gone (call model.train() to analyse training)")
                continue
            for k in range(norm.num_features):
                invariance(f"{name}[{k}]", k, (k,))
                if has_bias:
                    findings.laws.append(coordinate_law(space, f"{name}.bias", k, f"cancelled by the mean of "
                                                        f"{user.target}", family="zero-gradient", module=name))
        elif isinstance(m, nn.Linear) and is_feature_norm(norm, m.out_features):
            # LayerNorm: its translations are in conslaw.nn.shift; RMSNorm keeps the mean: no translation
            invariance(name, slice(0, m.out_features))
        elif isinstance(m, CONV) and isinstance(norm, nn.LayerNorm) and \
                tuple(norm.normalized_shape) == (m.out_channels,) and (is_layernorm2d(norm) or
                                                                   through_permute is not None):
            invariance(name, slice(0, m.out_channels))
            for label, slots in conv_writer_slots(graph, node, space):  # the shift per position it removes
                findings.laws.append(linear_law(f"{label} (shift removed by {user.target})", slots,
                                                family="translation (into LayerNorm)", module=name))
        elif isinstance(norm, nn.GroupNorm) and isinstance(m, CONV):
            per = norm.num_channels // norm.num_groups
            for g in range(norm.num_groups):
                invariance(f"{name} group {g}", slice(g * per, (g + 1) * per), (g,))


def channels_last_norm(graph: Graph, conv: fx.Node) -> fx.Node | None:
    """The LayerNorm(C) call that normalizes a conv's channels after a move to the last axis
    (``conv(x).permute(0, 2, 3, 1)`` then ``nn.LayerNorm(C)``: torchvision ConvNeXt), through single-user movement
    ops; None otherwise. The channel axis is followed by running the ops on channel tags (:mod:`.tags`)."""
    chain, node = [], conv
    while len(node.users) == 1:
        user = next(iter(node.users))
        if user.op == "call_module" and isinstance(graph.module_of(user), nn.LayerNorm):
            break
        if not is_movement(user) or data_args(user) != [node]:
            return None
        chain.append(user)
        node = user
    else:
        return None
    shape = graph.shape(conv)
    if not chain or shape is None or len(shape) < 3:
        return None
    env: dict = {conv: torch.arange(shape[1]).reshape(1, -1, *[1] * (len(shape) - 2)).expand(*shape)}
    if not run_chain(graph, chain, env):
        return None
    tags = env[chain[-1]]
    if not isinstance(tags, torch.Tensor) or tags.shape[-1] != shape[1] or \
            not torch.equal(tags, torch.arange(shape[1]).expand(*tags.shape)):
        return None
    return next(iter(node.users))

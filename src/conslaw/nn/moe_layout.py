"""The layout of a sparse mixture-of-experts block, recognised whatever its class (see :mod:`.moe`)."""

from __future__ import annotations

from torch import nn


def is_sparse_moe(module: nn.Module) -> bool:
    """A block with ``experts.gate_up_proj`` (E, 2I, H), ``experts.down_proj`` (E, H, I) and a router
    ``gate.weight`` (E, H): the layout of transformers' MoE blocks."""
    experts, router = getattr(module, "experts", None), getattr(module, "gate", None)
    gate_up = getattr(experts, "gate_up_proj", None)
    down = getattr(experts, "down_proj", None)
    weight = getattr(router, "weight", None)
    if not all(isinstance(p, nn.Parameter) for p in (gate_up, down, weight)):
        return False
    E, two_i, H = gate_up.shape if gate_up.dim() == 3 else (0, 0, 0)
    return (two_i % 2 == 0 and E > 0 and tuple(down.shape) == (E, H, two_i // 2)
            and tuple(weight.shape) == (E, H) and getattr(router, "bias", None) is None)

"""vmap over a batch of arguments, or a loop when the fields route on values (mixture-of-experts blocks).

The engine batches brackets and fields with ``torch.func.vmap``. A model that picks a path by the values
of its activations (a MoE block's top-k experts: ``one_hot``, ``where(mask)``) is data-dependent control
flow, which vmap refuses. :func:`vmap_or_loop` then evaluates the same function one batch entry at a
time (the same values at a higher cost) and marks the field source ``data_dependent`` so that later calls
go straight to the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.func import vmap
from torch.utils._pytree import tree_flatten, tree_map


def vmap_or_loop(fn: Callable, source: Any) -> Callable:
    """``vmap(fn)`` (every argument batched along dim 0), or the loop over the batch for a data-dependent source.

    Args:
        fn: the function of one batch entry.
        source: the field source whose ``data_dependent`` flag is read and set.
    """
    vmapped = vmap(fn)

    def loop(*args):
        n = tree_flatten(args)[0][0].shape[0]
        outs = [fn(*tree_map(lambda t, i=i: t[i], args)) for i in range(n)]
        return tree_map(lambda *xs: torch.stack(xs), outs[0], *outs[1:])

    def call(*args):
        if getattr(source, "data_dependent", False):
            return loop(*args)
        try:
            return vmapped(*args)
        except RuntimeError as exc:
            if "data-dependent" not in str(exc):
                raise
            source.data_dependent = True
            return loop(*args)

    return call

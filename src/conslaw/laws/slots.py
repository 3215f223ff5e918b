"""Slots: named slices of a parameter tensor ("unit k of a weight") that laws are written with.

A :class:`Slot` is the set of flat coordinates of one unit of a parameter
(row k of a Linear weight, output channel k of a convolution, column j of a
consumer weight, entry k of a bias), with the text that names it in a formula.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..params import ParamSpace


@dataclass(frozen=True)
class Slot:
    """Flat indices of units ``units`` of parameter ``name`` along ``axis``, and their text, e.g. ``W[3,:]``."""

    name: str
    index: torch.Tensor
    text: str
    axis: int = 0
    units: tuple[int, ...] = ()


def index_dtype(space: ParamSpace) -> torch.dtype:
    """int32 when every flat index of ``space`` fits (half the memory of the laws' index tensors), else int64."""
    return torch.int32 if space.D < 2**31 else torch.long


def unit_slot(space: ParamSpace, name: str, axis: int, k: int | slice, cols: list[int] | None = None) -> Slot:
    """Entries of parameter ``name`` with index k (a unit, or a slice of units, or ``cols``) along ``axis``.

    Args:
        space: the parameter space holding ``name``.
        name: the parameter.
        axis: the unit axis (0 for rows / output channels, 1 for columns / input channels).
        k: one unit index, or a slice of them.
        cols: explicit unit indices (overrides ``k``).
    """
    idx = space.indices(name)
    if cols is not None:
        sel = idx.index_select(axis, torch.tensor(cols))
        label = f"{cols[0]}:{cols[-1] + 1}" if len(cols) > 1 and cols == list(range(cols[0], cols[-1] + 1)) \
            else ",".join(map(str, cols))
        units = tuple(cols)
    else:
        sel = idx.select(axis, k) if isinstance(k, int) else idx[(slice(None),) * axis + (k,)]
        label = str(k) if isinstance(k, int) else f"{k.start}:{k.stop}"
        units = (k,) if isinstance(k, int) else tuple(range(k.start, k.stop))
    parts = [":"] * idx.dim()
    parts[axis] = label
    text = f"{name}[{','.join(parts)}]" if idx.dim() > 1 else f"{name}[{label}]"
    # a copy (a view would keep the whole index tensor alive), as int32 when every index fits: the laws of a
    # 100M-parameter model hold ~10^8 indices
    index = sel.reshape(-1).to(index_dtype(space), copy=True)
    return Slot(name, index, text, axis, units)


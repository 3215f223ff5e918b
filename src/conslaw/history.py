"""History: rows of floats in one preallocated, growable array (amortized O(1) per appended row).

The capacity doubles when full, so that n appends copy at most 2n rows in all, and the
recorded rows are always one contiguous block, read as a view without copying.
"""

from __future__ import annotations

import numpy as np


class History:
    """Rows of ``width`` float64 values; :attr:`data` is the read-only view of the rows appended so far.

    Args:
        width: number of values per row.
        capacity: rows preallocated (grows by doubling).
    """

    def __init__(self, width: int, capacity: int = 256) -> None:
        self._buffer = np.full((max(int(capacity), 1), width), np.nan)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"History({self._size} rows of {self._buffer.shape[1]}, capacity {self._buffer.shape[0]})"

    @property
    def capacity(self) -> int:
        """Rows that fit before the next reallocation."""
        return self._buffer.shape[0]

    def append(self, row: np.ndarray | float) -> None:
        """Append one row (a scalar fills a one-column history)."""
        if self._size == self._buffer.shape[0]:
            grown = np.full((2 * self._buffer.shape[0], self._buffer.shape[1]), np.nan)
            grown[:self._size] = self._buffer
            self._buffer = grown
        self._buffer[self._size] = row
        self._size += 1

    def set_last(self, column: int, value: float) -> None:
        """Overwrite one value of the newest row (e.g. a loss known only after the step was recorded)."""
        self._buffer[self._size - 1, column] = value

    @property
    def data(self) -> np.ndarray:
        """(rows, width) read-only view of the recorded rows."""
        view = self._buffer[:self._size]
        view.flags.writeable = False
        return view

    def last(self) -> np.ndarray:
        """The newest row (read-only view)."""
        return self.data[-1]

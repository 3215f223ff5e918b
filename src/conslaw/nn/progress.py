"""A progress bar on stderr for the long stages of ``find_laws`` on large models (tqdm).

Shown only when asked (``show``: a model above :data:`.analysis.LARGE_D` parameters) and when stderr is a
terminal (tqdm's ``disable=None``), so that piped output, JSON and tests stay clean.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm


class Bar:
    """A tqdm bar that counts the items of the iterables it wraps."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def wrap(self, items: Iterable) -> Iterator:
        """Yield the items, advancing the bar by one after each."""
        for item in items:
            yield item
            self.bar.update(1)


@contextmanager
def progress(total: int, desc: str, unit: str, show: bool) -> Iterator[Bar]:
    """A bar of ``total`` steps on stderr (when ``show`` and stderr is a terminal), closed on exit."""
    bar = tqdm(total=total, desc=desc, unit=unit, disable=None if show else True, leave=False)
    try:
        yield Bar(bar)
    finally:
        bar.close()

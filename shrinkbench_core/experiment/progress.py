"""Progress bars that stay quiet when not on a terminal or when asked to."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(
    items: Iterable[T], description: str, quiet: bool = False, total: int | None = None
) -> Iterator[T]:
    """Wrap ``items`` in a tqdm bar on stderr, unless quiet or stderr is not a terminal."""
    if quiet or not sys.stderr.isatty():
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=description, total=total, leave=False, dynamic_ncols=True)

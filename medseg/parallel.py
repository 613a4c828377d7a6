"""One process per core for the work that pays for it (header scans, JPEG decoding, case preparation)."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worth_a_pool(count: int, workers: int, min_items: int) -> bool:
    """Whether ``count`` items justify forking ``workers`` processes (Linux only: fork)."""
    return workers > 1 and count >= min_items and sys.platform == "linux"


def ordered_map(
    function: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int,
    min_items: int,
    initializer: Callable[[], None] | None = None,
) -> Iterator[R]:
    """``map(function, items)``, spread over forked processes when :func:`worth_a_pool`.

    Fork, not spawn: workers inherit the parent's memory (a shared output array,
    loaded modules) and never re-import the caller's ``__main__``, so this works
    from scripts and notebooks alike. Results come back in order. ``initializer``
    runs once in each worker process.
    """
    if not worth_a_pool(len(items), workers, min_items):
        yield from map(function, items)
        return
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=initializer) as pool:
        yield from pool.map(function, items, chunksize=max(1, min(64, len(items) // (workers * 8))))

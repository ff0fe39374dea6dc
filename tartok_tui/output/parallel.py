"""Per-tar work of ``status`` and ``verify`` on a bounded pool of threads.

The work is reads (local files, or objects on a store, where each request waits on the
network), so threads overlap them; a bound keeps a 2,360-tar output from opening thousands
of connections at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_JOBS = 16
"""Tars read at once."""

Progress = Callable[[int, int], None]
"""Called with (tars finished, tars in all) after each tar."""


def in_parallel(
    work: Callable[[T], R],
    items: Sequence[T],
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
) -> list[R]:
    """``work(item)`` for every item, ``jobs`` at a time; results in the items' order. The
    first exception is raised once the calls already running are over (the rest never start)."""
    if progress is not None:
        progress(0, len(items))
    with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="tartok-check") as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            for done, future in enumerate(as_completed(futures), 1):
                future.result()
                if progress is not None:
                    progress(done, len(items))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return [future.result() for future in futures]

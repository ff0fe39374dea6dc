"""Host memory of worker process trees, and what to do when it exceeds the limit."""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class TreeMemory:
    rss: int
    pss: int | None
    """Proportional set size where /proc lets us read it; shared pages (torch
    libraries, the page cache of the model file) counted once across workers."""

    @property
    def used(self) -> int:
        return self.pss if self.pss is not None else self.rss


def tree_memory(pid: int) -> TreeMemory | None:
    """RSS (and PSS where readable) of a process and all its descendants; None if gone."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    rss = 0
    pss: int | None = 0
    for proc in procs:
        try:
            if pss is not None:
                try:
                    info = proc.memory_full_info()
                    rss += info.rss
                    pss += info.pss
                    continue
                except psutil.AccessDenied:
                    # smaps unreadable (hardened /proc): fall back to RSS for the whole tree,
                    # mixing PSS and RSS would make the total meaningless.
                    pss = None
            rss += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue  # a child that exited between listing and reading holds no memory
    return TreeMemory(rss=rss, pss=pss)


@dataclass(frozen=True)
class MemoryAction:
    kind: str
    """"cleanup" (ask every worker to free caches) or "recycle" (restart one worker)."""
    slot: int | None = None


class MemoryGuard:
    """Escalates when the total stays above the limit: first cleanup, then recycle.

    A recycle is asked for only once until the total drops below the limit
    again, so one check cannot restart every worker in turn.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._over_since_cleanup = False
        self._recycle_pending = False

    def check(
        self, used_by_slot: dict[int, int], recyclable: set[int] | None = None
    ) -> MemoryAction | None:
        """``recyclable``: slots that may be recycled now (default: all). Only a worker
        in the middle of a tar qualifies; recycling one still loading would restart it
        before it ever did any work, forever."""
        total = sum(used_by_slot.values())
        if total <= self.limit_bytes:
            self._over_since_cleanup = False
            self._recycle_pending = False
            return None
        if not self._over_since_cleanup:
            self._over_since_cleanup = True
            return MemoryAction("cleanup")
        candidates = [n for n in used_by_slot if recyclable is None or n in recyclable]
        if self._recycle_pending or not candidates:
            return None
        self._recycle_pending = True
        biggest = max(candidates, key=lambda slot: used_by_slot[slot])
        return MemoryAction("recycle", biggest)

    def recycle_finished(self) -> None:
        """The recycled worker is back: allow another recycle if still over."""
        self._recycle_pending = False
        self._over_since_cleanup = False

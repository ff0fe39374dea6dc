"""Host memory of worker process trees, and what to do when it exceeds the limit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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


PSS_EVERY_S = 30.0
"""How often the total shown is refreshed from PSS when RSS alone says the workers are
under the limit (reading PSS walks every page of a process: ~20 ms for a loaded worker)."""


def needs_pss(rss_total: int, limit_bytes: int, since_last_pss_s: float) -> bool:
    """Whether a check must read PSS. PSS <= RSS, so while the RSS total is under the limit
    the PSS total is too and the guard's decision is the same without it; the total shown
    is refreshed from PSS every PSS_EVERY_S."""
    return rss_total > limit_bytes or since_last_pss_s >= PSS_EVERY_S


def tree_memory(pid: int, pss: bool = True) -> TreeMemory | None:
    """RSS (and PSS where readable and asked for) of a process and all its descendants;
    None if gone. RSS alone costs a small read per process."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    rss = 0
    pss_total: int | None = 0 if pss else None
    for proc in procs:
        try:
            if pss_total is not None:
                try:
                    info = proc.memory_full_info()
                    rss += info.rss
                    pss_total += info.pss
                    continue
                except psutil.AccessDenied:
                    # smaps unreadable (hardened /proc): fall back to RSS for the whole tree,
                    # mixing PSS and RSS would make the total meaningless.
                    pss_total = None
            rss += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue  # a child that exited between listing and reading holds no memory
    return TreeMemory(rss=rss, pss=pss_total)


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


class MemoryControls(Protocol):
    """What the memory watch may do: the same public controls the dashboard has."""

    def cleanup_all(self) -> None: ...

    def recycle(self, slot: int) -> None: ...

    def report(self, level: str, slot: int | None, message: str) -> None: ...


class MeasuredWorker(Protocol):
    """A slot as the memory watch sees it."""

    mem_bytes: int
    """Set by the watch: the RSS last measured (for the views)."""

    @property
    def n(self) -> int: ...

    @property
    def node(self) -> str:
        """The machine its worker runs on: the limit applies per machine."""
        ...

    @property
    def recyclable(self) -> bool:
        """In the middle of a tar and not already on its way out."""
        ...

    async def measure(self, pss: bool) -> TreeMemory | None: ...


LOCAL_NODE = "local"


def _node_of(worker: MeasuredWorker) -> str:
    return getattr(worker, "node", LOCAL_NODE)


class MemoryWatch:
    """Measures the workers, keeps the totals shown, and acts through the controls:
    cleanup above the limit, then a recycle of the biggest worker if still above.

    The limit is per machine (one guard per node): on a cluster each node's workers are
    held to it on their own, and a recycle picks the biggest worker of the node over it.
    """

    def __init__(self, limit_bytes: int, controls: MemoryControls) -> None:
        self.limit_bytes = limit_bytes
        self.controls = controls
        self.node_bytes: dict[str, int] = {}
        """Workers' memory per node as the limit counts it (PSS where read), last measured."""
        self._guards: dict[str, MemoryGuard] = {}
        self._last_pss: dict[str, float] = {}
        self._recycling: dict[int, str] = {}
        """Slot -> node of each recycle asked for and not finished."""

    @property
    def total_bytes(self) -> int:
        """All workers' memory (every node), last measured."""
        return sum(self.node_bytes.values())

    def _guard(self, node: str) -> MemoryGuard:
        if node not in self._guards:
            self._guards[node] = MemoryGuard(self.limit_bytes)
        return self._guards[node]

    async def check(self, workers: Sequence[MeasuredWorker], now: float) -> None:
        by_node: dict[str, list[MeasuredWorker]] = {}
        for worker in workers:
            by_node.setdefault(_node_of(worker), []).append(worker)
        for node in list(self.node_bytes):
            if node not in by_node:
                del self.node_bytes[node]  # no worker there any more
        # Nodes measured side by side: one slow node (a remote call) must not hold up the rest.
        await asyncio.gather(*(self._check_node(n, ws, now) for n, ws in by_node.items()))

    async def _check_node(self, node: str, workers: list[MeasuredWorker], now: float) -> None:
        usage = await _measure(workers, pss=False)
        rss_total = sum(mem.rss for mem in usage.values() if mem is not None)
        last_pss = self._last_pss.get(node, float("-inf"))
        if needs_pss(rss_total, self.limit_bytes, now - last_pss):
            self._last_pss[node] = now
            usage = await _measure(workers, pss=True)
            self.node_bytes[node] = sum(mem.used for mem in usage.values() if mem is not None)
        used: dict[int, int] = {}
        for worker in workers:
            mem = usage.get(worker.n)
            worker.mem_bytes = mem.rss if mem is not None else 0  # shown: RSS; limit: PSS
            if mem is not None:
                used[worker.n] = mem.used
        action = self._guard(node).check(used, {w.n for w in workers if w.recyclable})
        if action is not None:
            self._act(node, action)

    def _act(self, node: str, action: MemoryAction) -> None:
        gib = self.node_bytes.get(node, 0) / 2**30
        limit_gib = self.limit_bytes / 2**30
        where = "" if node == LOCAL_NODE else f"node {node}: "
        if action.kind == "cleanup":
            self.controls.report(
                "warning",
                None,
                f"{where}workers use {gib:.1f} GiB > limit {limit_gib:g} GiB: "
                "asking all to free memory",
            )
            self.controls.cleanup_all()
        elif action.kind == "recycle" and action.slot is not None:
            self.controls.report(
                "warning",
                action.slot,
                f"{where}still {gib:.1f} GiB after cleanup: recycling this worker after its "
                "current tar",
            )
            self._recycling[action.slot] = node
            self.controls.recycle(action.slot)

    def recycle_finished(self, slot: int) -> None:
        """The recycled worker of ``slot`` is back."""
        node = self._recycling.pop(slot, LOCAL_NODE)
        if node in self._guards:
            self._guards[node].recycle_finished()


async def _measure(workers: Sequence[MeasuredWorker], pss: bool) -> dict[int, TreeMemory | None]:
    results = await asyncio.gather(*(w.measure(pss=pss) for w in workers))
    return {w.n: mem for w, mem in zip(workers, results, strict=True)}

"""The tar queue: which tar each lease gets, and what becomes of a tar when its lease ends.

Pure bookkeeping: no processes, files or clocks, so every exactly-once rule is tested in
milliseconds. The rules:

- A tar is leased to at most one worker at a time, and a lease ends exactly once:
  committed (the tar is done), failed (given up for this run; the next run tries again),
  or returned (back to the *front* of the queue, uncommitted: it is older work than
  anything still waiting).
- A return caused by the worker dying or stalling counts against the tar. After
  ``poison_threshold`` such kills the tar is leased in isolation (sample by sample, so
  that the sample that kills is found); after ``max_kills`` it is failed.
- A return the user or the run caused (a kill, a restart, a stop, a recycle), and one
  caused by the worker's machine being lost (a cluster node that died or was preempted),
  does not count, however many.
- Isolation is journalled here, per tar, not in a worker: the worker holding an isolated
  tar says which sample it begins and what came of it. When its lease comes back from a
  crash or a stall, the sample it was in gets a ``worker_crash`` error record; from any
  other return that sample is retried. Every later lease of the tar carries the decided
  samples (``Grant.decided``), so isolation follows the tar to any worker on any node.
- A tar whose input could not be read (I/O or network, after the worker's own retries)
  is returned; after ``input_retries`` such returns it is failed.
- A tar given back because a clip ran out of device memory even alone is returned (a
  fresh worker process tries it); after ``oom_retries`` such returns it is failed for
  this run. Never a kill: out of memory says nothing about the samples, so it neither
  isolates the tar nor blames the sample an isolated run was in.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tartok_tui.output.journal import JournalEntry

T = TypeVar("T", bound=Hashable)

KILLS_EXTRA = 5
"""An isolated tar may kill this many more workers (one poison sample each) before it is
given up: each isolated crash marks one sample, so a tar needing more is likely killing
workers for another reason."""
INPUT_RETRIES = 3
OOM_RETRIES = 3
"""Tries of a tar that ran out of device memory (each on a fresh worker process) before it
fails for this run: enough for memory a neighbour held for a while, not for a clip that
never fits."""


class TarStatus(enum.StrEnum):
    PENDING = "pending"
    LEASED = "leased"
    DONE = "done"
    SKIPPED = "skipped"
    """Complete before this run started."""
    FAILED = "failed"


class ReturnCause(enum.StrEnum):
    """Why a lease came back uncommitted."""

    CRASH = "crash"
    """The worker died while holding it: counts against the tar; an isolated tar's sample
    that the worker was in is the culprit."""
    STALL = "stall"
    """The worker stopped making progress and was killed: counts against the tar, and
    blames an isolated tar's sample as a crash does."""
    DEVICE = "device"
    """The worker lost its device (a dead CUDA context): counts against the tar, so that a
    clip that keeps breaking the device gets its tar isolated and in the end given up, but
    never blames the sample it was in (a GPU that fails on its own is not the data's
    fault): an isolated tar retries that sample."""
    INTENDED = "intended"
    """Killed, restarted, stopped or recycled on purpose: not the tar's fault."""
    NODE_LOST = "node_lost"
    """The worker's machine was lost (a cluster node died, left or was preempted): not
    the tar's fault, however often; an isolated tar retries the sample it was in."""
    INPUT = "input"
    """The input could not be read: retried a few times, then failed."""
    STORE = "store"
    """The output's store could not be reached to upload: retried a few times, then failed."""
    OOM = "oom"
    """A clip ran out of device memory even alone: retried a few times on fresh worker
    processes, then failed; never a kill, never the sample's fault."""


@dataclass
class TarEntry:
    status: TarStatus = TarStatus.PENDING
    kills: int = 0
    input_failures: int = 0
    oom_failures: int = 0
    node_losses: int = 0
    """Leases that came back because their worker's node was lost (counted nowhere else)."""
    isolated: bool = False
    decided: dict[int, JournalEntry] = field(default_factory=dict)
    """The isolation journal: each decided sample's outcome (kept until the tar is done)."""
    in_sample: tuple[int, str] | None = None
    """Isolated and leased: the sample (index, key) its worker began and has not finished."""
    samples: int = 0
    errors: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    expected: int | None = None
    """Samples in the tar, once a worker has counted them."""
    reason: str | None = None


@dataclass(frozen=True)
class Grant(Generic[T]):
    lease_id: int
    tar: T
    isolate: bool
    newly_isolated: bool
    """This lease is the tar's first in isolation (worth telling the user)."""
    kills: int
    decided: tuple[JournalEntry, ...] = ()
    """Isolated only: the samples already decided, to be written as they are."""


@dataclass(frozen=True)
class Returned:
    requeued: bool
    """Back in the queue; False when the tar was given up (see ``reason``)."""
    reason: str | None = None
    blamed: JournalEntry | None = None
    """An isolated tar's sample that the dead worker was in, now decided as a
    ``worker_crash`` (to be journalled)."""


class TarQueue(Generic[T]):
    """Tars of one run, in order. ``done``: tars complete before the run (skipped)."""

    def __init__(
        self,
        tars: Iterable[T],
        done: Iterable[T] = (),
        *,
        poison_threshold: int = 2,
        max_kills: int | None = None,
        input_retries: int = INPUT_RETRIES,
        oom_retries: int = OOM_RETRIES,
    ) -> None:
        if poison_threshold < 1:
            raise ValueError("poison_threshold must be at least 1")
        self.poison_threshold = poison_threshold
        self.max_kills = max_kills if max_kills is not None else poison_threshold + KILLS_EXTRA
        self.input_retries = input_retries
        self.oom_retries = oom_retries
        skipped = set(done)
        self._entries: dict[T, TarEntry] = {}
        self._pending: deque[T] = deque()
        for tar in tars:
            if tar in self._entries:
                raise ValueError(f"tar listed twice: {tar!r}")
            entry = TarEntry()
            if tar in skipped:
                entry.status = TarStatus.SKIPPED
            else:
                self._pending.append(tar)
            self._entries[tar] = entry
        self._leases: dict[int, T] = {}
        self._next_id = 0

    # -- reading ----------------------------------------------------------------------------

    def __contains__(self, tar: object) -> bool:
        return tar in self._entries

    def __iter__(self) -> Iterator[tuple[T, TarEntry]]:
        return iter(self._entries.items())

    def entry(self, tar: T) -> TarEntry:
        return self._entries[tar]

    def counts(self) -> Counter[TarStatus]:
        return Counter(e.status for e in self._entries.values())

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def leased(self) -> int:
        return len(self._leases)

    def work_remaining(self) -> bool:
        """Whether any tar still waits for a lease or is leased."""
        return bool(self._pending) or bool(self._leases)

    def tar_of(self, lease_id: int) -> T | None:
        return self._leases.get(lease_id)

    # -- leasing ----------------------------------------------------------------------------

    def lease(self) -> Grant[T] | None:
        """The next tar for a worker, or None when nothing waits."""
        if not self._pending:
            return None
        tar = self._pending.popleft()
        entry = self._entries[tar]
        self._next_id += 1
        isolate = entry.kills >= self.poison_threshold
        newly = isolate and not entry.isolated
        entry.isolated = entry.isolated or isolate
        entry.in_sample = None
        entry.status = TarStatus.LEASED
        self._leases[self._next_id] = tar
        decided = tuple(sorted(entry.decided.values(), key=lambda e: e.index)) if isolate else ()
        return Grant(self._next_id, tar, isolate, newly, entry.kills, decided)

    def _end(self, lease_id: int) -> tuple[T, TarEntry]:
        tar = self._leases.pop(lease_id, None)
        if tar is None:
            raise KeyError(f"lease {lease_id} is not active")
        return tar, self._entries[tar]

    # -- isolation --------------------------------------------------------------------------

    def restore(self, tar: T, decided: Mapping[int, JournalEntry]) -> None:
        """What an earlier run's journal decided about ``tar``'s samples (used once the
        tar is isolated in this run, as a journal written in this run would be)."""
        self._entries[tar].decided.update(decided)

    def sample_begun(self, lease_id: int, index: int, key: str) -> bool:
        """The worker holding an isolated lease began a sample; False for no such lease."""
        entry = self._isolated(lease_id)
        if entry is None:
            return False
        entry.in_sample = (index, key)
        return True

    def sample_done(self, lease_id: int, outcome: JournalEntry) -> bool:
        """An isolated lease's sample has its outcome; False (nothing recorded) for no such
        lease. The caller journals what is recorded."""
        entry = self._isolated(lease_id)
        if entry is None:
            return False
        entry.decided[outcome.index] = outcome
        if entry.in_sample is not None and entry.in_sample[0] == outcome.index:
            entry.in_sample = None
        return True

    def _isolated(self, lease_id: int) -> TarEntry | None:
        tar = self._leases.get(lease_id)
        if tar is None or not self._entries[tar].isolated:
            return None
        return self._entries[tar]

    def set_expected(self, lease_id: int, samples: int) -> None:
        tar = self._leases.get(lease_id)
        if tar is not None:
            self._entries[tar].expected = samples

    def commit(
        self,
        lease_id: int,
        *,
        samples: int = 0,
        errors: int = 0,
        audio_s: float = 0.0,
        wall_s: float = 0.0,
    ) -> T:
        """The worker committed the tar's output: done."""
        tar, entry = self._end(lease_id)
        entry.status = TarStatus.DONE
        entry.samples, entry.errors, entry.audio_s, entry.wall_s = samples, errors, audio_s, wall_s
        entry.reason = None
        entry.decided.clear()
        return tar

    def fail(self, lease_id: int, reason: str) -> T:
        """The tar cannot be done in this run."""
        tar, entry = self._end(lease_id)
        entry.status = TarStatus.FAILED
        entry.reason = reason
        return tar

    def give_back(self, lease_id: int, cause: ReturnCause, detail: str | None = None) -> Returned:
        """The lease ended uncommitted: requeue the tar at the front, or give it up.

        ``detail``: what went wrong, kept in the reason if the tar is given up."""
        tar, entry = self._end(lease_id)
        blamed = self._blame(entry, cause)
        if cause in (ReturnCause.CRASH, ReturnCause.STALL, ReturnCause.DEVICE):
            entry.kills += 1
            if entry.kills >= self.max_kills:
                what = {
                    ReturnCause.CRASH: "killed",
                    ReturnCause.STALL: "stalled",
                    ReturnCause.DEVICE: "lost the device of",
                }[cause]
                entry.status = TarStatus.FAILED
                entry.reason = f"{what} {entry.kills} workers, even sample by sample"
                return Returned(False, entry.reason, blamed)
        elif cause == ReturnCause.NODE_LOST:
            entry.node_losses += 1
        elif cause in (ReturnCause.INPUT, ReturnCause.STORE):
            entry.input_failures += 1
            if entry.input_failures >= self.input_retries:
                entry.status = TarStatus.FAILED
                what = "input unreadable" if cause == ReturnCause.INPUT else "upload failed"
                entry.reason = f"{what} {entry.input_failures} times" + (
                    f"; last: {detail}" if detail else ""
                )
                return Returned(False, entry.reason)
        elif cause == ReturnCause.OOM:
            entry.oom_failures += 1
            if entry.oom_failures >= self.oom_retries:
                entry.status = TarStatus.FAILED
                entry.reason = (
                    f"out of device memory {entry.oom_failures} times, each on a fresh worker"
                )
                if detail:
                    entry.reason += f"; last: {detail}"
                return Returned(False, entry.reason)
        entry.status = TarStatus.PENDING
        self._pending.appendleft(tar)
        return Returned(True, blamed=blamed)

    @staticmethod
    def _blame(entry: TarEntry, cause: ReturnCause) -> JournalEntry | None:
        """An isolated lease ended: the sample its worker was in is decided as the culprit
        when the worker crashed or stalled in it; otherwise (a lost device or node, a kill
        on purpose, a failure the worker reported) it is tried again."""
        in_sample, entry.in_sample = entry.in_sample, None
        if in_sample is None or cause not in (ReturnCause.CRASH, ReturnCause.STALL):
            return None
        verdict = JournalEntry.crash(*in_sample)
        entry.decided[verdict.index] = verdict
        return verdict

    def committed_elsewhere(self, lease_id: int) -> T:
        """The output exists although the worker did not report it (it died between the
        commit and its message): the tar is done."""
        tar, entry = self._end(lease_id)
        entry.status = TarStatus.DONE
        entry.decided.clear()
        return tar

    # -- sample totals ----------------------------------------------------------------------

    def samples_expected(self) -> tuple[int | None, bool]:
        """(samples in this run's tars, whether part of it is an estimate).

        Tars done in this run count what their worker wrote, tars a worker has counted
        their count; the rest are estimated at the mean of those. None before any tar of
        this run has been counted.
        """
        known: list[int] = []
        unknown = 0
        for entry in self._entries.values():
            if entry.status == TarStatus.SKIPPED:
                continue
            if entry.status == TarStatus.DONE:
                known.append(entry.samples)
            elif entry.expected is not None:
                known.append(entry.expected)
            else:
                unknown += 1
        if not known:
            return None, False
        estimate = round(sum(known) / len(known) * unknown) if unknown else 0
        return sum(known) + estimate, unknown > 0

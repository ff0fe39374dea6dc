"""A worker slot: its phase, why its process is expected to end, its lease and its counts.

A slot outlives its worker processes: when one dies the slot starts the next. Its phase
(``WorkerState``, transitions documented there) says what the worker is doing; its
``intent`` says why the supervisor expects the process to end, which decides what
happens next (restart now, back off, stop for good) and whether the tar it held is
blamed.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from pathlib import Path

from tartok_tui import messages as m
from tartok_tui.supervisor.memory import TreeMemory
from tartok_tui.supervisor.placement import Placement
from tartok_tui.supervisor.process import WorkerProcess
from tartok_tui.supervisor.restart import RestartPolicy
from tartok_tui.supervisor.views import WorkerState

LOAD_ALLOWANCE_S = 1800.0
"""Loading may take this long without progress (a first download of the model, a cold
disk) before it is called a stall, however short the stall timeout."""


class ExitIntent(enum.StrEnum):
    """Why the supervisor expects the slot's current process to end."""

    NONE = "none"
    """Not expected: an exit is a crash (backoff, counts toward the crash loop)."""
    STOP = "stop"
    """The user stopped the slot: finish the tar, exit, do not restart."""
    RECYCLE = "recycle"
    """The memory watch wants a fresh process: finish the tar, exit, restart now."""
    RESTART = "restart"
    """The user asked for a fresh worker: abort the tar, restart now."""
    KILL = "kill"
    """The user killed the worker: restart now, not a failure."""
    STALL = "stall"
    """Killed for making no progress: a failure (backoff), counts against the tar."""
    SHUTDOWN = "shutdown"
    """The run is stopping: abort, do not restart."""
    DRAIN = "drain"
    """No work is left: exit, do not restart."""
    OUT_OF_MEMORY = "out_of_memory"
    """The worker gave its tar back out of device memory and exits for a clean allocator:
    a failure (backoff, counts toward the crash loop) that blames no tar."""
    UNREACHABLE = "unreachable"
    """Killed because its requests could not be delivered (a cluster node out of reach):
    restarted after a backoff like a crash, but the tar is not blamed."""

    @property
    def blames_tar(self) -> bool:
        """A tar held when the process ended counts a kill against it."""
        return self in (ExitIntent.NONE, ExitIntent.STALL)


@dataclass
class ActiveLease:
    lease_id: int
    tar: Path | str
    """A local tar's Path, or a tar's URL."""
    isolate: bool
    started_at: float
    """Monotonic time the lease was given."""
    progress: m.Progress | None = None
    expected: int | None = None


@dataclass
class SlotStats:
    """Committed tars only (the current lease's progress is added for views)."""

    tars_done: int = 0
    samples: int = 0
    errors: int = 0
    audio_s: float = 0.0
    model_s: float = 0.0
    wall_s: float = 0.0
    batches: int = 0
    restarts: int = 0


@dataclass
class Slot:
    placement: Placement
    policy: RestartPolicy
    phase: WorkerState = WorkerState.STARTING
    intent: ExitIntent = ExitIntent.NONE
    pause_wanted: bool = False
    """The user wants this slot paused; applied to every process it starts."""
    process: WorkerProcess | None = None
    task: asyncio.Task[None] | None = None
    lease: ActiveLease | None = None
    stats: SlotStats = field(default_factory=SlotStats)
    load_failed: str | None = None
    last_error: str | None = None
    backoff_until: float | None = None
    """Wall-clock time of the next start while in BACKOFF / STALLED."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    mem_bytes: int = 0
    gpu_mb: float = 0.0
    node: str = "local"
    device: str | None = None
    """Where the current process runs when its launcher knows better than the placement
    (on a cluster, the GPU Ray assigned on the node)."""
    # liveness, monotonic seconds
    last_message_at: float = 0.0
    last_progress_at: float = 0.0
    heartbeat_progress: int | None = None
    throttled: str | None = None
    """What the worker waits for on a throttled store (its last heartbeat), or None."""
    throttle_retry_at: float | None = None
    """When that call tries again; None while the try is under way."""

    @property
    def n(self) -> int:
        return self.placement.slot

    @property
    def alive(self) -> bool:
        return self.process is not None

    @property
    def recyclable(self) -> bool:
        """For the memory watch: in the middle of a tar and not already on its way out."""
        return self.lease is not None and self.intent == ExitIntent.NONE

    async def measure(self, pss: bool) -> TreeMemory | None:
        """The memory of the worker's process tree (None without a worker)."""
        if self.process is None:
            return None
        return await self.process.memory(pss)

    def can_take_lease(self) -> bool:
        return (
            self.alive
            and self.phase == WorkerState.IDLE
            and self.lease is None
            and self.intent == ExitIntent.NONE
            and not self.pause_wanted
        )

    # -- transitions ------------------------------------------------------------------------

    def started(self, process: WorkerProcess, now: float) -> None:
        self.process = process
        self.node = process.node
        self.device = getattr(process, "device", None)
        self.phase = WorkerState.STARTING
        self.intent = ExitIntent.NONE
        self.load_failed = None
        self.last_message_at = self.last_progress_at = now
        self.heartbeat_progress = None

    def heard(self, msg: m.Message, now: float) -> None:
        """Any message: alive. Lease messages and a moving heartbeat: progress."""
        self.last_message_at = now
        if isinstance(msg, m.Heartbeat):
            if msg.progress != self.heartbeat_progress:
                self.heartbeat_progress = msg.progress
                self.last_progress_at = now
            self.throttled = msg.throttled
            self.throttle_retry_at = None if msg.retry_in_s is None else now + msg.retry_in_s
            if msg.throttled is not None and msg.retry_in_s is not None:
                # Waiting out a throttled store is not a stall (a try under way may be).
                self.last_progress_at = now
        elif isinstance(
            msg,
            (
                m.Hello,
                m.Ready,
                m.TarStarted,
                m.Progress,
                m.SampleError,
                m.IsolationBegin,
                m.IsolationDone,
                m.TarDone,
                m.TarFailed,
            ),
        ):
            self.last_progress_at = now

    def hello(self) -> None:
        if self.phase == WorkerState.STARTING:
            self.phase = WorkerState.LOADING

    def loaded(self) -> None:
        if self.phase != WorkerState.LOADING:
            return
        if self.intent != ExitIntent.NONE:
            self.phase = WorkerState.STOPPING
        elif self.pause_wanted:
            self.phase = WorkerState.PAUSING
        else:
            self.phase = WorkerState.IDLE

    def leased(self, lease: ActiveLease) -> None:
        self.lease = lease
        self.phase = WorkerState.RUNNING
        self.last_progress_at = lease.started_at

    def lease_ended(self) -> ActiveLease | None:
        lease, self.lease = self.lease, None
        if self.phase == WorkerState.RUNNING:
            self.phase = WorkerState.IDLE
        return lease

    def pause(self) -> None:
        self.pause_wanted = True
        if self.phase in (WorkerState.IDLE, WorkerState.RUNNING):
            self.phase = WorkerState.PAUSING

    def worker_says(self, state: str, now: float) -> None:
        """The worker's own report: "paused" acknowledges a pause."""
        if state == "paused" and self.phase == WorkerState.PAUSING:
            self.phase = WorkerState.PAUSED
        elif state in ("running", "idle") and self.phase == WorkerState.PAUSED:
            # Resumed (the time paused is not a stall).
            self.last_progress_at = now
            self.phase = WorkerState.RUNNING if self.lease is not None else WorkerState.IDLE

    def resume(self, now: float) -> None:
        self.pause_wanted = False
        if self.phase in (WorkerState.PAUSING, WorkerState.PAUSED):
            self.last_progress_at = now
            self.phase = WorkerState.RUNNING if self.lease is not None else WorkerState.IDLE

    def expect_exit(self, intent: ExitIntent) -> None:
        """Record why the process will end; the first reason given wins, except that a
        kill, a restart, a stall or a shutdown overrides a gentler one."""
        strong = (ExitIntent.KILL, ExitIntent.RESTART, ExitIntent.STALL, ExitIntent.SHUTDOWN)
        if self.intent == ExitIntent.NONE or (
            intent in strong and self.intent not in (ExitIntent.STALL, ExitIntent.SHUTDOWN)
        ):
            self.intent = intent
        if intent == ExitIntent.STALL:
            self.phase = WorkerState.STALLED
        elif self.alive and self.phase.alive:
            self.phase = WorkerState.STOPPING

    def exited(self) -> None:
        self.process = None
        self.throttled = self.throttle_retry_at = None
        self.mem_bytes = 0
        self.gpu_mb = 0.0

    # -- stalls -----------------------------------------------------------------------------

    def stalled_for(self, now: float, timeout_s: float) -> float | None:
        """Seconds without progress if past this phase's allowance, else None.

        Loading gets max(timeout, LOAD_ALLOWANCE_S); a worker with a lease gets the
        timeout; a paused or idle worker has nothing to progress on and never stalls.
        """
        if not self._progress_expected:
            return None
        loading = self.phase in (WorkerState.STARTING, WorkerState.LOADING)
        allowance = max(timeout_s, LOAD_ALLOWANCE_S) if loading else timeout_s
        idle = now - self.last_progress_at
        return idle if idle > allowance else None

    def progress_age(self, now: float) -> float | None:
        """For views: seconds since the last progress, where progress is expected."""
        if not self._progress_expected:
            return None
        return max(0.0, now - self.last_progress_at)

    @property
    def _progress_expected(self) -> bool:
        """A worker loading, or working on a lease (not paused, not idle)."""
        if self.process is None:
            return False
        return self.phase in (WorkerState.STARTING, WorkerState.LOADING) or (
            self.lease is not None
            and self.phase in (WorkerState.RUNNING, WorkerState.PAUSING, WorkerState.STOPPING)
        )


def new_slot(placement: Placement, policy: RestartPolicy) -> Slot:
    return Slot(placement=placement, policy=policy, last_progress_at=time.monotonic())

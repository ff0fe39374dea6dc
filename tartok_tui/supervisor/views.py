"""Immutable snapshots of the run, for the dashboard and the headless printer.

The supervisor builds a fresh ``RunView`` on request; views never hold
references into live supervisor state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class WorkerState(enum.StrEnum):
    """A worker slot's phase: the one place its lifecycle is kept.

    Transitions (anything alive may also go to STALLED or, when its process ends,
    to BACKOFF / FATAL / DONE / STARTING as the supervisor decides):

    - PENDING -> STARTING: the slot could be placed (cluster mode: resources appeared).
    - STARTING -> LOADING: the worker said hello.
    - LOADING -> IDLE: model loaded and self-tested (ready); -> PAUSING if a pause is wanted.
    - IDLE <-> RUNNING: a lease is given / the lease ends (committed, failed).
    - IDLE/RUNNING -> PAUSING: pause sent; PAUSING -> PAUSED: the worker acknowledged (no
      batch runs now); PAUSING/PAUSED -> RUNNING or IDLE: resumed.
    - any alive -> STOPPING: told to stop after its tar, or to abort.
    - RUNNING/PAUSING/STOPPING/LOADING -> STALLED: no progress past its allowance; its
      process is killed, and the slot shows STALLED until it restarts.
    - process ended -> BACKOFF (crashed; restarts after a delay) -> STARTING,
      -> FATAL (crash loop or model load failure; only a user restart revives it),
      -> DONE (no more work, or stopped by the user), or -> STARTING (user kill/restart,
      recycle).
    """

    PENDING = "pending"  # waiting for resources to be placed (cluster mode)
    STARTING = "starting"  # process spawned, no hello yet
    LOADING = "loading"  # loading the model
    IDLE = "idle"  # ready, waiting for a lease
    RUNNING = "running"  # processing a tar
    PAUSING = "pausing"  # asked to pause; the worker has not acknowledged yet
    PAUSED = "paused"  # the worker acknowledged: no batch runs until resumed
    STOPPING = "stopping"  # finishing its tar (or aborting it), then exits
    STALLED = "stalled"  # no progress past the stall timeout: killed, restarts
    BACKOFF = "backoff"  # died; waiting before restart
    FATAL = "fatal"  # gave up on this slot
    DONE = "done"  # exited cleanly, no more work

    @property
    def alive(self) -> bool:
        """Whether a worker process exists (or is being started) in this phase."""
        return self in _ALIVE


_ALIVE = frozenset(
    {
        WorkerState.STARTING,
        WorkerState.LOADING,
        WorkerState.IDLE,
        WorkerState.RUNNING,
        WorkerState.PAUSING,
        WorkerState.PAUSED,
        WorkerState.STOPPING,
    }
)


@dataclass(frozen=True)
class WorkerView:
    slot: int
    device: str
    """"cuda:0", "cpu", ..."""
    pid: int | None
    state: WorkerState
    tar: str | None
    """Name of the tar being processed."""
    tar_samples_done: int
    tar_samples_expected: int | None
    tars_done: int
    samples_done: int
    errors: int
    audio_seconds: float
    model_seconds: float
    avg_latency_ms: float
    """Average wall milliseconds per sample over this slot's life."""
    avg_batch_ms: float
    realtime_factor: float
    """Audio seconds per model second."""
    rss_bytes: int
    gpu_mem_mb: float
    restarts: int
    last_error: str | None
    backoff_until: float | None = None
    progress_age_s: float | None = None
    """Seconds since the worker last made progress on its lease (or on loading); None when
    it has nothing to progress on (idle, paused, not running)."""
    node: str = "local"
    """The machine the worker runs on ("local" without a cluster)."""
    throttled: str | None = None
    """What the worker waits for on a throttled store ("503 SlowDown reading s3://..."):
    shown as a state over RUNNING, not as an error; None when it waits for nothing."""
    throttle_retry_at: float | None = None
    """Wall-clock time of that call's next try; None while the try is under way."""


@dataclass(frozen=True)
class GpuView:
    """One GPU as NVML reports it; None where NVML does not say."""

    device: str
    """"cuda:K", as the workers' device column names it."""
    name: str
    utilization_pct: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    power_w: float | None
    temperature_c: float | None
    node: str = "local"


@dataclass(frozen=True)
class Event:
    time: float
    level: str
    """info | warning | error"""
    slot: int | None
    message: str


@dataclass(frozen=True)
class RunView:
    started_at: float
    now: float
    tars_total: int
    tars_done: int
    tars_skipped: int
    """Already complete before this run started."""
    tars_failed: int
    samples_done: int
    samples_expected: int | None
    """Samples in this run's tars: counted ones, plus an estimate for tars not opened yet
    (see ``samples_expected_is_estimate``); None before any tar has been counted."""
    errors: int
    audio_seconds: float
    memory_bytes: int
    memory_limit_bytes: int
    workers: tuple[WorkerView, ...]
    events: tuple[Event, ...]
    """Most recent last; bounded."""
    finished: bool
    stopping: bool
    exit_reason: str | None = None
    samples_expected_is_estimate: bool = False
    """True while some tars' counts are estimated from the tars counted so far."""
    throughput: tuple[float, ...] = ()
    """x real time over the last minutes, one value per interval, oldest first."""
    throughput_interval_s: float = 10.0
    gpus: tuple[GpuView, ...] = ()
    nodes_alive: int = 1

    @property
    def elapsed(self) -> float:
        return max(0.0, self.now - self.started_at)

    @property
    def samples_per_second(self) -> float:
        return self.samples_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def realtime_factor(self) -> float:
        """Audio seconds per wall second over the whole run."""
        return self.audio_seconds / self.elapsed if self.elapsed > 0 else 0.0

"""Immutable snapshots of the run, for the dashboard and the headless printer.

The supervisor builds a fresh ``RunView`` on request; views never hold
references into live supervisor state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class WorkerState(enum.StrEnum):
    STARTING = "starting"  # process spawned, no hello yet
    LOADING = "loading"  # loading the model
    IDLE = "idle"  # ready, waiting for a lease
    RUNNING = "running"  # processing a tar
    PAUSED = "paused"
    STOPPING = "stopping"  # finishing its tar, then exits
    BACKOFF = "backoff"  # died; waiting before restart
    FATAL = "fatal"  # gave up on this slot
    DONE = "done"  # exited cleanly, no more work


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

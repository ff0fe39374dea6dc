"""Human-readable numbers for the dashboard and the headless printer."""

from __future__ import annotations

import datetime
import math

from rich.text import Text

from tartok_tui.supervisor.views import Event, RunView, WorkerState, WorkerView

GIB = 1024**3

ALIVE_STATES = frozenset(
    {
        WorkerState.STARTING,
        WorkerState.LOADING,
        WorkerState.IDLE,
        WorkerState.RUNNING,
        WorkerState.PAUSED,
        WorkerState.STOPPING,
        WorkerState.BACKOFF,
    }
)
"""States of a slot that still has (or will have again) a process."""

STATE_STYLES: dict[WorkerState, str] = {
    WorkerState.STARTING: "cyan",
    WorkerState.LOADING: "cyan",
    WorkerState.IDLE: "dim",
    WorkerState.RUNNING: "bold green",
    WorkerState.PAUSED: "bold yellow",
    WorkerState.STOPPING: "magenta",
    WorkerState.BACKOFF: "bold red",
    WorkerState.FATAL: "bold white on red",
    WorkerState.DONE: "blue",
}

LEVEL_STYLES: dict[str, str] = {"info": "", "warning": "yellow", "error": "bold red"}


def duration(seconds: float | None) -> str:
    """``1:02:03``; days are spelled out for runs that last them (``2d 03:04:05``)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    total = int(seconds)
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours}:{minutes:02d}:{secs:02d}"


def audio_amount(seconds: float) -> str:
    """``12.5 min`` below an hour, ``2,549.2 h`` above."""
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:,.1f} h"


def gib(n_bytes: int | float) -> str:
    return f"{n_bytes / GIB:.1f} GiB"


def count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def tars_complete(view: RunView) -> int:
    """Tars with committed output: done in this run plus those found done at start."""
    return view.tars_done + view.tars_skipped


def fraction_done(view: RunView) -> float:
    """Best estimate of overall progress in [0, 1]: samples when known, else tars."""
    if view.samples_expected:
        return min(1.0, view.samples_done / view.samples_expected)
    if view.tars_total:
        return min(1.0, tars_complete(view) / view.tars_total)
    return 0.0


def eta_seconds(view: RunView) -> float | None:
    """Seconds left at this run's pace, or None before there is a pace to go by.

    Tars skipped at start cost nothing, so the pace is measured on the tars done
    in this run only.
    """
    if view.finished:
        return 0.0
    elapsed = view.elapsed
    if elapsed <= 0:
        return None
    if view.samples_expected and view.samples_done > 0:
        remaining = max(0, view.samples_expected - view.samples_done)
        return remaining / view.samples_per_second
    remaining_tars = view.tars_total - tars_complete(view) - view.tars_failed
    if view.tars_done > 0:
        return max(0, remaining_tars) * elapsed / view.tars_done
    return None


def audio_hours_per_hour(view: RunView) -> float:
    """Hours of audio tokenized per wall-clock hour (the same number as ×real time)."""
    return view.realtime_factor


def workers_alive(view: RunView) -> int:
    return sum(1 for w in view.workers if w.state in ALIVE_STATES)


def tar_progress(worker: WorkerView) -> str:
    """``1,234/25,000 4%`` for the worker's current tar, or ``1,234`` when the size is unknown."""
    if worker.tar is None:
        return ""
    if worker.tar_samples_expected:
        pct = 100.0 * worker.tar_samples_done / worker.tar_samples_expected
        return f"{worker.tar_samples_done:,}/{worker.tar_samples_expected:,} {pct:3.0f}%"
    return f"{worker.tar_samples_done:,}"


def run_state(view: RunView) -> str:
    if view.finished:
        return "finished" if not view.exit_reason else f"finished: {view.exit_reason}"
    if view.stopping:
        return "stopping"
    return "running"


def device_sort_key(device: str) -> tuple[int, int, str]:
    """GPUs in index order first, then anything else (the CPU) by name."""
    kind, _, index = device.partition(":")
    if kind == "cuda":
        return (0, int(index) if index.isdigit() else 0, device)
    return (1, 0, device)


def clock_time(timestamp: float, tz: datetime.tzinfo | None = None) -> str:
    """Wall-clock ``HH:MM:SS`` of a timestamp, in ``tz`` (local time when None)."""
    return datetime.datetime.fromtimestamp(timestamp, tz).strftime("%H:%M:%S")


def event_text(event: Event, tz: datetime.tzinfo | None = None) -> Text:
    """One event-log line: time, slot, message, coloured by level."""
    text = Text(clock_time(event.time, tz), style="dim")
    text.append("  ")
    text.append(f"slot {event.slot:>2}" if event.slot is not None else "run    ", style="bold")
    text.append("  ")
    text.append(event.message, style=LEVEL_STYLES.get(event.level, ""))
    return text

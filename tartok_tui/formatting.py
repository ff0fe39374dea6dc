"""Human-readable numbers and states for the dashboard and the headless printer."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable

from rich.text import Text

from tartok_tui.supervisor.views import Event, GpuView, RunView, WorkerState, WorkerView

GIB = 1024**3

ALIVE_STATES = frozenset(state for state in WorkerState if state.alive)
"""States in which the slot has a worker process (or one being started)."""

RETURNING_STATES = frozenset({WorkerState.PENDING, WorkerState.BACKOFF, WorkerState.STALLED})
"""No process now, but the slot gets one again without anyone asking."""

IN_PLAY_STATES = ALIVE_STATES | RETURNING_STATES
"""Slots that still take part in the run: stopping the run means stopping these."""

PROGRESS_WARN_S = 60.0
"""A worker that should be progressing and has not for this long is shown as a warning."""

STATE_LEGEND: dict[WorkerState, tuple[str, str]] = {
    WorkerState.PENDING: ("italic cyan", "waiting for a node with room for it (cluster)"),
    WorkerState.STARTING: ("cyan", "process started, not yet talking"),
    WorkerState.LOADING: ("cyan", "loading and self-testing the model"),
    WorkerState.IDLE: ("dim", "ready, waiting for a tar"),
    WorkerState.RUNNING: ("bold green", "tokenizing a tar"),
    WorkerState.PAUSING: ("yellow", "asked to pause; finishing the batch it is in"),
    WorkerState.PAUSED: ("bold yellow", "paused: runs no batch until resumed"),
    WorkerState.STOPPING: ("magenta", "finishing or aborting its tar, then exits"),
    WorkerState.STALLED: (
        "bold white on dark_orange3",
        "no progress past the stall timeout: killed, restarts",
    ),
    WorkerState.BACKOFF: ("bold red", "died; restarts after a delay"),
    WorkerState.FATAL: ("bold white on red", "gave up (crash loop, model load failed)"),
    WorkerState.DONE: ("blue", "exited: no more work, or stopped"),
}
"""Each state's colour and what it means, in lifecycle order (the help screen's legend)."""

STATE_STYLES: dict[WorkerState, str] = {state: look[0] for state, look in STATE_LEGEND.items()}

THROTTLED = "throttled"
THROTTLED_STYLE = "italic yellow"
THROTTLED_MEANING = "running, but its store asks it to slow down: waits, then tries again"
"""Shown over RUNNING while the worker waits on a throttled store (not a phase of the
slot: the worker still holds its tar and goes on when the store answers)."""

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


def age(seconds: float | None) -> str:
    """A short time since something: ``42s``, ``3m05s``, ``2h07m``; ``-`` when None."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def progress_age_style(worker: WorkerView) -> str:
    """Warning colour once a worker that should progress has not for a minute."""
    if worker.progress_age_s is not None and worker.progress_age_s >= PROGRESS_WARN_S:
        return "bold yellow"
    return ""


def audio_amount(seconds: float) -> str:
    """``12.5 min`` below an hour, ``2,549.2 h`` above."""
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:,.1f} h"


def gib(n_bytes: int | float) -> str:
    return f"{n_bytes / GIB:.1f} GiB"


def size(n_bytes: int | float) -> str:
    """``812.0 KiB``, ``12.3 MiB``, ``208.4 GiB``."""
    for unit, scale in (("GiB", GIB), ("MiB", 1 << 20)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:,.1f} {unit}"
    return f"{n_bytes / 1024:,.1f} KiB"


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


def samples_total(view: RunView) -> str:
    """The run's sample total, ``~`` in front while part of it is estimated; ``?`` unknown."""
    if not view.samples_expected:
        return "?"
    return ("~" if view.samples_expected_is_estimate else "") + f"{view.samples_expected:,}"


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


def eta(view: RunView) -> str:
    """The ETA, ``~`` in front when it rests on an estimated sample total."""
    text = duration(eta_seconds(view))
    estimated = view.samples_expected_is_estimate and bool(view.samples_expected)
    return f"~{text}" if estimated and not view.finished and text != "--:--" else text


def audio_hours_per_hour(view: RunView) -> float:
    """Hours of audio tokenized per wall-clock hour (the same number as ×real time)."""
    return view.realtime_factor


def workers_alive(workers: Iterable[WorkerView]) -> int:
    """Slots with a worker process now."""
    return sum(1 for w in workers if w.state in ALIVE_STATES)


def slots_in(view: RunView, state: WorkerState) -> list[int]:
    return [w.slot for w in view.workers if w.state == state]


def slot_list(slots: Iterable[int]) -> str:
    """``slot 3`` or ``slots 5, 6``."""
    numbers = [str(s) for s in slots]
    return ("slot " if len(numbers) == 1 else "slots ") + ", ".join(numbers)


def nodes(view: RunView) -> list[str]:
    """The machines the run's workers and GPUs are on, sorted ("local" alone without a cluster)."""
    return sorted({w.node for w in view.workers} | {g.node for g in view.gpus})


def gpu_memory(gpu: GpuView) -> str | None:
    """``30.1/139.8 GiB`` (used of total), or None when NVML did not say."""
    if gpu.memory_used_bytes is None or not gpu.memory_total_bytes:
        return None
    return f"{gpu.memory_used_bytes / GIB:.1f}/{gpu.memory_total_bytes / GIB:.1f} GiB"


def gpu_figures(gpu: GpuView, *, degree: str = "°C") -> str:
    """``87% 30.1/139.8 GiB 412 W 64°C``; what NVML did not say is left out."""
    parts = []
    if gpu.utilization_pct is not None:
        parts.append(f"{gpu.utilization_pct:.0f}%")
    if (memory := gpu_memory(gpu)) is not None:
        parts.append(memory)
    if gpu.power_w is not None:
        parts.append(f"{gpu.power_w:.0f} W")
    if gpu.temperature_c is not None:
        parts.append(f"{gpu.temperature_c:.0f}{degree}")
    return " ".join(parts) or "no readings"


def gpu_for(view: RunView, node: str, device: str) -> GpuView | None:
    """The GPU a group of workers runs on: same node, same ``cuda:K``."""
    return next((g for g in view.gpus if g.node == node and g.device == device), None)


def is_throttled(worker: WorkerView) -> bool:
    return worker.throttled is not None and worker.state == WorkerState.RUNNING


def state_label(worker: WorkerView) -> tuple[str, str]:
    """(text, style) of the worker's state column: its phase, or "throttled" over RUNNING."""
    if is_throttled(worker):
        return THROTTLED, THROTTLED_STYLE
    return worker.state.value, STATE_STYLES.get(worker.state, "")


def throttle_note(worker: WorkerView, now: float) -> str | None:
    """``throttled (retry in 40 s)`` (``retrying`` while the try is under way), or None."""
    if not is_throttled(worker):
        return None
    if worker.throttle_retry_at is None or worker.throttle_retry_at <= now:
        return f"{THROTTLED} (retrying)"
    return f"{THROTTLED} (retry in {worker.throttle_retry_at - now:.0f} s)"


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

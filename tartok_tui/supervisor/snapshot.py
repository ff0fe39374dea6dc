"""Immutable views of the run built from the supervisor's live state."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from tartok_tui.output.paths import relative_tar_path
from tartok_tui.storage import Location
from tartok_tui.supervisor.queue import TarQueue, TarStatus
from tartok_tui.supervisor.slot import Slot
from tartok_tui.supervisor.views import Event, GpuView, RunView, WorkerView


def slot_totals(slot: Slot) -> tuple[int, int, float, float, int]:
    """samples, errors, audio s, model s, batches: committed plus the current lease."""
    s = slot.stats
    p = slot.lease.progress if slot.lease is not None else None
    if p is None:
        return s.samples, s.errors, s.audio_s, s.model_s, s.batches
    return (
        s.samples + p.samples_done,
        s.errors + p.errors,
        s.audio_s + p.audio_seconds,
        s.model_s + p.model_seconds,
        s.batches + p.batches,
    )


def worker_view(slot: Slot, input_dir: Path | str, now_mono: float) -> WorkerView:
    samples, errors, audio, model, batches = slot_totals(slot)
    lease = slot.lease
    wall = slot.stats.wall_s + (now_mono - lease.started_at if lease is not None else 0.0)
    pid = slot.process.pid if slot.process is not None else None
    retry_at = slot.throttle_retry_at
    return WorkerView(
        slot=slot.n,
        device=slot.device or slot.placement.device,
        pid=pid,
        state=slot.phase,
        tar=str(relative_tar_path(input_dir, lease.tar)) if lease is not None else None,
        tar_samples_done=lease.progress.samples_done if lease and lease.progress else 0,
        tar_samples_expected=lease.expected if lease is not None else None,
        tars_done=slot.stats.tars_done,
        samples_done=samples,
        errors=errors,
        audio_seconds=audio,
        model_seconds=model,
        avg_latency_ms=wall * 1000.0 / samples if samples else 0.0,
        avg_batch_ms=model * 1000.0 / batches if batches else 0.0,
        realtime_factor=audio / model if model > 0 else 0.0,
        rss_bytes=slot.mem_bytes,
        gpu_mem_mb=slot.gpu_mb,
        restarts=slot.stats.restarts,
        last_error=slot.last_error,
        backoff_until=slot.backoff_until,
        progress_age_s=slot.progress_age(now_mono),
        node=slot.node,
        throttled=slot.throttled,
        throttle_retry_at=time.time() + retry_at - now_mono if retry_at is not None else None,
    )


class ThroughputHistory:
    """x real time per interval over the last minutes, for the sparkline."""

    def __init__(self, interval_s: float = 10.0, keep: int = 60) -> None:
        self.interval_s = interval_s
        self.keep = keep
        self._values: list[float] = []
        self._mark_time: float | None = None
        self._mark_audio = 0.0

    def sample(self, now: float, audio_seconds: float) -> None:
        """Call often; records one value per elapsed interval."""
        if self._mark_time is None:
            self._mark_time, self._mark_audio = now, audio_seconds
            return
        elapsed = now - self._mark_time
        if elapsed < self.interval_s:
            return
        self._values.append(max(0.0, audio_seconds - self._mark_audio) / elapsed)
        del self._values[: -self.keep]
        self._mark_time, self._mark_audio = now, audio_seconds

    def values(self) -> tuple[float, ...]:
        return tuple(self._values)


def nodes_alive(slots: Sequence[Slot]) -> int:
    return len({s.node for s in slots if s.process is not None}) or (1 if slots else 0)


def run_view(
    slots: Sequence[Slot],
    queue: TarQueue[Location],
    input_dir: Location,
    *,
    started_at: float,
    memory: tuple[int, int],
    events: tuple[Event, ...],
    state: tuple[bool, bool, str | None],
    throughput: ThroughputHistory,
    gpus: tuple[GpuView, ...],
) -> RunView:
    """The whole run now: ``memory`` (used, limit), ``state`` (finished, stopping, why)."""
    now_mono = time.monotonic()
    workers = tuple(worker_view(s, input_dir, now_mono) for s in slots)
    counts = queue.counts()
    expected, estimated = queue.samples_expected()
    finished, stopping, exit_reason = state
    return RunView(
        started_at=started_at,
        now=time.time(),
        tars_total=sum(counts.values()),
        tars_done=counts[TarStatus.DONE],
        tars_skipped=counts[TarStatus.SKIPPED],
        tars_failed=counts[TarStatus.FAILED],
        samples_done=sum(w.samples_done for w in workers),
        samples_expected=expected,
        samples_expected_is_estimate=estimated,
        errors=sum(w.errors for w in workers),
        audio_seconds=sum(w.audio_seconds for w in workers),
        memory_bytes=memory[0],
        memory_limit_bytes=memory[1],
        workers=workers,
        events=events,
        finished=finished,
        stopping=stopping,
        exit_reason=exit_reason,
        throughput=throughput.values(),
        throughput_interval_s=throughput.interval_s,
        gpus=gpus,
        nodes_alive=nodes_alive(slots),
    )

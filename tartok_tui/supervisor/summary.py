"""The run summary: what ``run()`` returns and what is written to OUTPUT/run-summary.json."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tartok_tui.exit_codes import ExitCode
from tartok_tui.output.paths import relative_tar_path
from tartok_tui.storage import Location
from tartok_tui.supervisor.queue import TarQueue, TarStatus
from tartok_tui.supervisor.views import RunView, WorkerView


@dataclass
class TarResult:
    tar: str
    """Relative to the input directory."""
    status: str
    """done | skipped (complete before this run) | failed | unfinished"""
    samples: int = 0
    errors: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    worker_kills: int = 0
    """How many workers died while holding this tar."""
    isolated: bool = False
    reason: str | None = None


@dataclass
class RunSummary:
    exit_code: int
    """See ``tartok_tui.exit_codes.ExitCode``."""
    exit_reason: str
    started_at: float
    finished_at: float
    tars_total: int
    tars_done: int
    tars_skipped: int
    tars_failed: int
    tars_unfinished: int
    samples: int
    errors: int
    audio_seconds: float
    model_seconds: float
    worker_restarts: int
    workers: list[dict] = field(default_factory=list)
    tars: list[TarResult] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return self.finished_at - self.started_at

    def to_dict(self) -> dict:
        data = asdict(self)
        data["elapsed_seconds"] = self.elapsed
        data["realtime_factor"] = self.audio_seconds / self.elapsed if self.elapsed > 0 else 0.0
        return data


def write_summary(summary: RunSummary, path: Path) -> None:
    """Write atomically, so a reader never sees half a summary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".run-summary.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(summary.to_dict(), fh, ensure_ascii=False, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def decide_exit(
    *,
    interrupted: bool,
    halted: tuple[int, str] | None,
    all_fatal: bool,
    fatal_reason: str | None,
    failed: int,
    unfinished: int,
) -> tuple[int, str]:
    """The run's exit code and reason (see ``ExitCode``)."""
    if halted is not None:
        return halted
    if interrupted:
        return ExitCode.INTERRUPTED, "interrupted by a stop request"
    if all_fatal and unfinished:
        return ExitCode.ALL_FATAL, fatal_reason or "every worker slot is fatal"
    if failed or unfinished:
        return ExitCode.INCOMPLETE, f"{failed} tars failed, {unfinished} unfinished"
    return ExitCode.OK, "all tars done"


def build_summary(
    exit_code: int,
    exit_reason: str,
    queue: TarQueue[Location],
    view: RunView,
    input_dir: Location,
    started_at: float,
) -> RunSummary:
    """The summary of a finished run from its queue and its last view."""
    counts = queue.counts()
    unfinished = counts[TarStatus.PENDING] + counts[TarStatus.LEASED]
    tars = [
        TarResult(
            tar=str(relative_tar_path(input_dir, t)),
            status="unfinished"
            if e.status in (TarStatus.PENDING, TarStatus.LEASED)
            else str(e.status),
            samples=e.samples,
            errors=e.errors,
            audio_seconds=e.audio_s,
            wall_seconds=e.wall_s,
            worker_kills=e.kills,
            isolated=e.isolated,
            reason=e.reason,
        )
        for t, e in queue
    ]
    return RunSummary(
        exit_code=exit_code,
        exit_reason=exit_reason,
        started_at=started_at,
        finished_at=time.time(),
        tars_total=view.tars_total,
        tars_done=view.tars_done,
        tars_skipped=view.tars_skipped,
        tars_failed=view.tars_failed,
        tars_unfinished=unfinished,
        samples=view.samples_done,
        errors=view.errors,
        audio_seconds=view.audio_seconds,
        model_seconds=sum(w.model_seconds for w in view.workers),
        worker_restarts=sum(w.restarts for w in view.workers),
        workers=[_worker_summary(w) for w in view.workers],
        tars=tars,
    )


def _worker_summary(w: WorkerView) -> dict[str, Any]:
    return {
        "slot": w.slot,
        "device": w.device,
        "node": w.node,
        "state": str(w.state),
        "tars_done": w.tars_done,
        "samples": w.samples_done,
        "errors": w.errors,
        "audio_seconds": w.audio_seconds,
        "model_seconds": w.model_seconds,
        "avg_latency_ms": w.avg_latency_ms,
        "avg_batch_ms": w.avg_batch_ms,
        "realtime_factor": w.realtime_factor,
        "restarts": w.restarts,
        "last_error": w.last_error,
    }

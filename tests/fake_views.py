"""Scripted run snapshots, as the real supervisor builds them, for the view tests and screenshots.

The sample total is counted the way the real queue counts it (tars done or counted, plus an
estimate for the rest, flagged as one) and events are worded as the real supervisor words them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tartok_tui.formatting import ALIVE_STATES, GIB
from tartok_tui.supervisor.views import Event, GpuView, RunView, WorkerState, WorkerView

START = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC: a fixed origin for simulated time
SAMPLES_PER_TAR = 25_000
SECONDS_PER_SAMPLE = 10.0
STALL_TIMEOUT_S = 600.0
LOAD_S = 29.1
BUSY = (WorkerState.RUNNING, WorkerState.PAUSING, WorkerState.PAUSED, WorkerState.STOPPING)


def tar_name(index: int) -> str:
    return f"EN-B{index:06d}.tar"


def worker(
    slot: int,
    device: str,
    state: WorkerState = WorkerState.RUNNING,
    *,
    tar_index: int | None = None,
    tar_done: int = 0,
    tars_done: int = 0,
    restarts: int = 0,
    last_error: str | None = None,
    rate: float = 40.0,
    progress_age_s: float | None = None,
    node: str = "local",
) -> WorkerView:
    """A worker view with this slot's history, working at ``rate`` samples/s."""
    samples = tars_done * SAMPLES_PER_TAR + tar_done
    busy = state in BUSY
    progressing = state in (WorkerState.RUNNING, WorkerState.PAUSING, WorkerState.STOPPING)
    if progress_age_s is None and (progressing or state == WorkerState.LOADING):
        progress_age_s = 0.4 + (slot % 3) * 0.7
    return WorkerView(
        slot=slot,
        device=device,
        pid=41000 + slot * 17 if state in ALIVE_STATES else None,
        state=state,
        tar=tar_name(tar_index if tar_index is not None else slot) if busy else None,
        tar_samples_done=tar_done if busy else 0,
        tar_samples_expected=SAMPLES_PER_TAR if busy else None,
        tars_done=tars_done,
        samples_done=samples,
        errors=samples // 4000,
        audio_seconds=samples * SECONDS_PER_SAMPLE,
        model_seconds=samples / rate * 0.9 if samples else 0.0,
        avg_latency_ms=1000.0 / rate if samples else 0.0,
        avg_batch_ms=1000.0 / rate * 24 * 0.9 if samples else 0.0,
        realtime_factor=rate * SECONDS_PER_SAMPLE / 0.9 if samples else 0.0,
        rss_bytes=int((5.2 + 0.1 * slot) * GIB) if state in ALIVE_STATES else 0,
        gpu_mem_mb=(14_200.0 + 37 * slot) if device.startswith("cuda") and busy else 0.0,
        restarts=restarts,
        last_error=last_error,
        progress_age_s=progress_age_s if state not in (WorkerState.PAUSED,) else None,
        node=node,
    )


def gpu(device: str, util: float, used_gib: float, node: str = "local") -> GpuView:
    """An H100 as NVML reports it under this load."""
    return GpuView(
        device=device,
        name="NVIDIA H100 80GB HBM3",
        utilization_pct=util,
        memory_used_bytes=int(used_gib * GIB),
        memory_total_bytes=int(79.6 * GIB),
        power_w=90 + 6 * util,
        temperature_c=round(34 + 0.38 * util),
        node=node,
    )


def counted_samples(
    tars_total: int, tars_skipped: int, workers: tuple[WorkerView, ...], tars_done: int
) -> tuple[int | None, bool]:
    """The run's sample total as the real queue counts it: tars done in this run and
    tars a worker has counted, plus the mean of those for every tar not counted yet."""
    counted = [w.tar_samples_expected for w in workers if w.tar and w.tar_samples_expected]
    known = [SAMPLES_PER_TAR] * tars_done + counted
    if not known:
        return None, False
    unknown = max(0, tars_total - tars_skipped - len(known))
    return sum(known) + round(sum(known) / len(known) * unknown), unknown > 0


def throughput_history(points: int, level: float, dips: dict[int, float]) -> tuple[float, ...]:
    """x real time per 10 s, a gentle wave around ``level``, ``dips`` (index -> factor) applied."""
    wave = (0.0, 0.03, 0.05, 0.02, -0.02, -0.04, -0.01, 0.02)
    return tuple(
        round(level * (1 + wave[i % len(wave)]) * dips.get(i, 1.0), 1) for i in range(points)
    )


def run_totals(
    workers: tuple[WorkerView, ...], tars_total: int, tars_skipped: int
) -> dict[str, Any]:
    """A run's sums over its workers, and the sample total counted as the queue does."""
    samples = sum(w.samples_done for w in workers)
    tars_done = sum(w.tars_done for w in workers)
    expected, estimated = counted_samples(tars_total, tars_skipped, workers, tars_done)
    return {
        "tars_done": tars_done,
        "samples_done": samples,
        "samples_expected": expected,
        "samples_expected_is_estimate": estimated,
        "errors": sum(w.errors for w in workers),
        "audio_seconds": samples * SECONDS_PER_SAMPLE,
        "memory_bytes": sum(w.rss_bytes for w in workers),
    }


def run_view(
    workers: tuple[WorkerView, ...],
    *,
    now: float,
    tars_total: int,
    tars_skipped: int,
    tars_failed: int = 0,
    events: tuple[Event, ...] = (),
    gpus: tuple[GpuView, ...] = (),
    throughput: tuple[float, ...] = (),
    nodes_alive: int = 1,
) -> RunView:
    return RunView(
        started_at=START,
        now=now,
        tars_total=tars_total,
        tars_skipped=tars_skipped,
        tars_failed=tars_failed,
        **run_totals(workers, tars_total, tars_skipped),
        memory_limit_bytes=100 * GIB,
        workers=workers,
        events=events,
        finished=False,
        stopping=False,
        throughput=throughput,
        gpus=gpus,
        nodes_alive=nodes_alive,
    )


def mid_run_view(now: float = START + 3723.0) -> RunView:
    """Eight GPU workers on four GPUs plus one CPU worker, an hour into a 400-tar run:
    most running, one paused, one waiting to restart after a crash, one restarted
    earlier, one still loading, one with no progress for over a minute."""
    workers = (
        worker(0, "cuda:0", tar_index=40, tar_done=18_312, tars_done=5),
        worker(
            1,
            "cuda:0",
            tar_index=41,
            tar_done=9_870,
            tars_done=5,
            restarts=1,
            last_error="killed by SIGKILL while on EN-B000017.tar",
        ),
        worker(2, "cuda:1", tar_index=42, tar_done=22_001, tars_done=5),
        worker(3, "cuda:1", WorkerState.PAUSED, tar_index=43, tar_done=3_150, tars_done=4),
        worker(4, "cuda:2", tar_index=44, tar_done=12_544, tars_done=5),
        replace(
            worker(
                5,
                "cuda:2",
                WorkerState.BACKOFF,
                tars_done=4,
                restarts=2,
                last_error="exit code 1 while on EN-B000045.tar",
            ),
            backoff_until=START + 3724.7,
        ),
        worker(6, "cuda:3", tar_index=46, tar_done=640, tars_done=6, progress_age_s=84.0),
        worker(7, "cuda:3", WorkerState.LOADING, progress_age_s=8.0),
        worker(8, "cpu", tar_index=48, tar_done=1_210, rate=3.1),
    )
    # Worded as the real supervisor words them.
    events = (
        Event(START + 1.2, "info", None, "400 tars, 12 already done, 388 to process"),
        Event(START + 1.9, "info", 0, "worker started (pid 41000, cuda:0)"),
        Event(START + 31.0, "info", 0, "model loaded in 29.1 s"),
        Event(
            START + 1204.5,
            "warning",
            1,
            "worker died (killed by SIGKILL while on EN-B000017.tar); restarting in 1.0 s",
        ),
        Event(
            START + 2400.0,
            "info",
            None,
            "total requests: 500000, total time: 2400.00 s, average time: 0.0048 s/request",
        ),
        Event(
            START + 3100.2,
            "warning",
            None,
            "workers use 101.3 GiB > limit 100 GiB: asking all to free memory",
        ),
        Event(
            START + 3600.4,
            "info",
            2,
            "EN-B000037.tar done: 25000 samples, 6 errors, 1847.2x real time",
        ),
        Event(
            START + 3612.0,
            "warning",
            4,
            "EN-B000044.tar: sample EN_B00044_S00012_W000121: decode: Format not recognised",
        ),
        Event(
            START + 3650.7,
            "warning",
            5,
            "worker died (exit code 1 while on EN-B000045.tar); restarting in 2.0 s",
        ),
        Event(START + 3689.9, "info", 3, "pausing"),
        Event(START + 3690.3, "info", 3, "paused (no batch running)"),
        Event(START + 3715.0, "info", 7, "worker started (pid 41119, cuda:3)"),
    )
    gpus = (
        gpu("cuda:0", 94, 31.2),
        gpu("cuda:1", 49, 30.6),
        gpu("cuda:2", 47, 16.1),
        gpu("cuda:3", 3, 18.9),
    )
    # The crash at 3650 s and slot 6's long batch show as dips.
    throughput = throughput_history(60, 2_600.0, {55: 0.78, 56: 0.8, 57: 0.8, 58: 0.68, 59: 0.66})
    return run_view(
        workers,
        now=now,
        tars_total=400,
        tars_skipped=12,
        tars_failed=1,
        events=events,
        gpus=gpus,
        throughput=throughput,
    )


def fleet_view(n_gpus: int = 8, procs_per_gpu: int = 2, now: float = START + 7200.0) -> RunView:
    """A bigger machine: ``n_gpus * procs_per_gpu`` workers, all running."""
    workers = tuple(
        worker(
            slot,
            f"cuda:{slot // procs_per_gpu}",
            tar_index=100 + slot,
            tar_done=(slot * 1_537) % 25_000,
            tars_done=8 + slot % 3,
            rate=30.0 + slot,
        )
        for slot in range(n_gpus * procs_per_gpu)
    )
    gpus = tuple(gpu(f"cuda:{k}", 88 + (k * 5) % 11, 29.0 + k * 0.4) for k in range(n_gpus))
    return run_view(
        workers,
        now=now,
        tars_total=2360,
        tars_skipped=0,
        events=(Event(START + 1.0, "info", None, "2360 tars, 0 already done, 2360 to process"),),
        gpus=gpus,
        throughput=throughput_history(60, 6_900.0, {}),
    )


def cluster_view(now: float = START + 5400.0) -> RunView:
    """Three nodes with two GPUs each, two workers per GPU; node c was lost, so its slots
    wait for resources."""
    workers = []
    for n, node in enumerate(("gpu-node-a", "gpu-node-b", "gpu-node-c")):
        for k in range(4):
            slot = n * 4 + k
            state = WorkerState.PENDING if node == "gpu-node-c" else WorkerState.RUNNING
            workers.append(
                worker(
                    slot,
                    f"cuda:{k // 2}",
                    state,
                    tar_index=200 + slot,
                    tar_done=(slot * 2_311) % 25_000,
                    tars_done=6 + slot % 2,
                    restarts=1 if state == WorkerState.PENDING else 0,
                    node=node,
                )
            )
    gpus = tuple(
        gpu(f"cuda:{k}", 90 - 7 * k + n, 30.0 + n, node=node)
        for n, node in enumerate(("gpu-node-a", "gpu-node-b"))
        for k in range(2)
    )
    events = (Event(START + 1.0, "info", None, "1200 tars, 0 already done, 1200 to process"),)
    return run_view(
        tuple(workers),
        now=now,
        tars_total=1200,
        tars_skipped=0,
        events=events,
        gpus=gpus,
        throughput=throughput_history(60, 3_400.0, {50 + i: 0.66 for i in range(10)}),
        nodes_alive=2,
    )

"""Hung workers are found and replaced; slow, paused and loading ones are left alone.

Real worker processes with the tiny model; a frozen process (SIGSTOP) looks to the
supervisor exactly like a CUDA call that never returns or a read from a hung mount.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import psutil
import pytest
from run_support import _assert_exactly_once, _config, _good_tars, _run, _wait_for

from tartok_tui.supervisor.supervisor import Supervisor
from tartok_tui.supervisor.views import Event, WorkerState

pytestmark = pytest.mark.timeout(300)


def _stall_events(events: list[Event]) -> list[str]:
    return [e.message for e in events if e.message.startswith("stalled:")]


async def test_a_frozen_worker_is_killed_and_replaced_and_nothing_is_lost(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _good_tars(inp, n_tars=6, n_samples=4)
    events: list[Event] = []
    cfg = _config(
        inp,
        out,
        model_dir,
        stall_timeout_s=8,
        worker_env={"TARTOK_FAULT_INJECT": "slow_ms=300"},
    )
    sup = Supervisor(cfg, on_event=events.append)
    run = asyncio.create_task(_run(sup))

    def running():
        return [w for w in sup.snapshot().workers if w.state == WorkerState.RUNNING and w.pid]

    await _wait_for(lambda: bool(running()), 120, "a worker on a tar")
    frozen = running()[0]
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        await _wait_for(
            lambda: any(w.slot == frozen.slot and w.progress_age_s and w.progress_age_s > 3
                        for w in sup.snapshot().workers),
            60,
            "the frozen worker's progress age to grow",
        )  # fmt: skip
        summary = await run
    finally:
        if psutil.pid_exists(frozen.pid):
            os.kill(frozen.pid, signal.SIGCONT)
    assert summary.exit_code == 0, summary.exit_reason
    _assert_exactly_once(out, good)
    stalls = _stall_events(events)
    assert len(stalls) == 1 and f"on {Path(frozen.tar).name}" in stalls[0], stalls
    assert not psutil.pid_exists(frozen.pid) or psutil.Process(frozen.pid).status() == "zombie"
    slot = next(w for w in summary.workers if w["slot"] == frozen.slot)
    assert slot["restarts"] >= 1


async def test_a_slow_but_progressing_worker_and_a_slow_load_are_never_called_stalled(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    # Each tar takes ~6 batches x 1 s: far longer than the 3 s stall timeout, but every
    # batch is progress. Loading sleeps 5 s: loading has its own, longer allowance.
    good = _good_tars(inp, n_tars=2, n_samples=6)
    events: list[Event] = []
    cfg = _config(
        inp,
        out,
        model_dir,
        num_proc=1,
        stall_timeout_s=3,
        worker_env={"TARTOK_FAULT_INJECT": "slow_ms=1000,load_sleep_s=5"},
    )
    summary = await _run(Supervisor(cfg, on_event=events.append))
    assert summary.exit_code == 0, summary.exit_reason
    assert _stall_events(events) == []
    assert summary.worker_restarts == 0
    _assert_exactly_once(out, good)


async def test_a_paused_worker_is_never_called_stalled(tmp_path: Path, model_dir: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _good_tars(inp, n_tars=2, n_samples=6)
    events: list[Event] = []
    cfg = _config(
        inp,
        out,
        model_dir,
        num_proc=1,
        stall_timeout_s=2,
        worker_env={"TARTOK_FAULT_INJECT": "slow_ms=200"},
    )
    sup = Supervisor(cfg, on_event=events.append)
    run = asyncio.create_task(_run(sup))

    def worker():
        workers = sup.snapshot().workers
        return workers[0] if workers else None

    await _wait_for(lambda: worker() is not None and worker().state == WorkerState.RUNNING, 120,
                    "running")  # fmt: skip
    sup.pause(0)
    await _wait_for(lambda: worker().state == WorkerState.PAUSED, 30, "paused")
    await asyncio.sleep(6)  # three stall timeouts, paused
    assert worker().state == WorkerState.PAUSED and worker().progress_age_s is None
    sup.resume(0)
    summary = await run
    assert summary.exit_code == 0
    assert _stall_events(events) == []
    assert summary.worker_restarts == 0
    _assert_exactly_once(out, good)


async def test_a_hung_model_call_is_a_stall_and_the_tar_is_redone(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _good_tars(inp, n_tars=3, n_samples=4)
    events: list[Event] = []
    # Every worker process hangs in its 7th model call (alive, heartbeats going, no
    # progress): each tar of 4 gets done by some process before it hangs.
    cfg = _config(
        inp,
        out,
        model_dir,
        num_proc=1,
        stall_timeout_s=4,
        crash_limit=20,
        poison_threshold=10,
        worker_env={"TARTOK_FAULT_INJECT": "hang_after=6"},
    )
    summary = await _run(Supervisor(cfg, on_event=events.append))
    assert summary.exit_code == 0, summary.exit_reason
    assert len(_stall_events(events)) >= 1
    _assert_exactly_once(out, good)

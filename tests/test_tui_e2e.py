"""The dashboard over the real supervisor, real worker subprocesses and the tiny model (CPU)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tartok_tui.config import RunConfig
from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.exit_codes import ExitCode
from tartok_tui.output.verify import verify
from tartok_tui.supervisor.supervisor import Supervisor
from tartok_tui.supervisor.views import RunView, WorkerState
from tartok_tui.tui.app import TartokApp
from tartok_tui.tui.log_pane import WorkerLogPane
from tartok_tui.tui.panes import EventLog
from tartok_tui.tui.table import WorkerTable

pytestmark = pytest.mark.timeout(300)


def pane_text(app: TartokApp) -> str:
    return "\n".join(line.text for line in app.query_one(WorkerLogPane).lines)


async def wait_for(
    app: TartokApp, what: Callable[[RunView], bool], timeout: float = 180.0
) -> RunView:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = app.supervisor.snapshot()
        if what(view):
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out; last view: {app.supervisor.snapshot()}")


async def test_dashboard_runs_pauses_and_resumes_real_workers_to_a_verified_output(
    tmp_path: Path, tiny_model_dir
):
    inp, out = tmp_path / "in", tmp_path / "out"
    for i in range(6):
        write_emilia_tar(
            inp / f"EN-B{i:06d}.tar", 4, seed=i, batch=i, audio_format="flac", min_s=1.0, max_s=2.0
        )
    config = RunConfig(
        input_dir=inp,
        output_dir=out,
        model_dir=str(tiny_model_dir),
        num_proc=2,
        device="cpu",
        threads_per_worker=1,
        # Slow batches (about a second per tar here) leave time to press keys mid-run.
        worker_env={"TARTOK_FAULT_INJECT": "slow_ms=800"},
    )
    app = TartokApp(
        Supervisor(config), log_path_for=lambda slot: config.logs_path / f"worker-{slot}.log"
    )
    async with app.run_test(size=(160, 40)) as pilot:
        view = await wait_for(app, lambda v: any(w.state == WorkerState.RUNNING for w in v.workers))
        slot = next(w.slot for w in view.workers if w.state == WorkerState.RUNNING)
        table = app.query_one(WorkerTable)
        table.move_cursor(row=table.get_row_index(f"slot:{slot}"))
        await pilot.pause()

        # The worker's own log, as it writes it.
        await pilot.press("l")
        await wait_for(app, lambda v: f"slot {slot} ready on cpu" in pane_text(app), timeout=30)

        await pilot.press("p")
        await wait_for(app, lambda v: v.workers[slot].state == WorkerState.PAUSED, timeout=30)
        # A refresh tick shows it, however long the loaded machine takes to get there.
        await wait_for(
            app, lambda v: table.get_cell(f"slot:{slot}", "state").plain == "paused", timeout=30
        )

        await pilot.press("r")
        await wait_for(app, lambda v: v.workers[slot].state != WorkerState.PAUSED, timeout=30)

        await app.workers.wait_for_complete()
        log_text = "\n".join(line.text for line in app.query_one(EventLog).lines)
    assert app.return_code == ExitCode.OK, log_text
    assert "pausing" in log_text and "paused (no batch running)" in log_text
    assert "resumed" in log_text
    assert verify(inp, out).ok

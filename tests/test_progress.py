"""The headless printer: progress lines, events, the live bar, the summary, signals."""

from __future__ import annotations

import asyncio
import datetime
import io
import os
import signal
from dataclasses import replace
from types import SimpleNamespace

import pytest
from fake_supervisor import FakeSupervisor
from fake_views import cluster_view, mid_run_view
from rich.console import Console

from tartok_tui import formatting as fmt
from tartok_tui.exit_codes import ExitCode
from tartok_tui.progress import (
    EXIT_MEANINGS,
    HeadlessPrinter,
    gpu_line,
    progress_line,
    run_headless,
)
from tartok_tui.supervisor.views import Event, WorkerState


def plain_printer(**kwargs) -> tuple[HeadlessPrinter, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False, highlight=False)
    return HeadlessPrinter(console, tz=datetime.UTC, **kwargs), out


def test_progress_line_has_the_numbers_a_log_reader_needs():
    line = progress_line(mid_run_view())
    assert line.startswith(
        "[1:02:03] | tars 46/400 (1 failed) | samples 917,727/~9,700,000 (9.5%, total estimated)"
    )
    assert "246.5 samples/s" in line
    assert "workers 8/9 (backoff: slot 5)" in line
    assert "mem 44.7 GiB/100.0 GiB" in line
    assert line.endswith("ETA ~9:53:47")
    assert "nodes" not in line  # one machine


def test_a_counted_total_and_its_eta_are_printed_plainly():
    line = progress_line(replace(mid_run_view(), samples_expected_is_estimate=False))
    assert "samples 917,727/9,700,000 (9.5%)" in line
    assert line.endswith("ETA 9:53:47")


def test_before_any_tar_is_counted_only_the_samples_done_are_printed():
    line = progress_line(replace(mid_run_view(), samples_expected=None))
    assert "| samples 917,727 |" in line


def test_stalled_and_pending_workers_are_named_by_slot():
    view = mid_run_view()
    states = {6: WorkerState.STALLED, 7: WorkerState.PENDING, 8: WorkerState.PENDING}
    view = replace(
        view,
        workers=tuple(
            replace(w, state=states[w.slot], pid=None) if w.slot in states else w
            for w in view.workers
        ),
    )
    line = progress_line(view)
    assert "workers 5/9 (stalled: slot 6; pending: slots 7, 8; backoff: slot 5)" in line


def test_a_throttled_worker_is_named_with_its_retry_not_as_an_error():
    view = mid_run_view()
    what = "503 SlowDown reading s3://b/x.tar at byte 0"
    retry_at = {0: view.now + 40.2, 1: None}
    workers = tuple(
        replace(w, throttled=what, throttle_retry_at=retry_at[w.slot]) if w.slot in retry_at else w
        for w in view.workers
    )
    view = replace(view, workers=workers)
    line = progress_line(view)
    assert "slot 0 throttled (retry in 40 s); slot 1 throttled (retrying))" in line
    assert [w.state for w in view.workers if w.slot in retry_at] == [WorkerState.RUNNING] * 2


def test_gpu_readings_follow_each_progress_line():
    assert gpu_line(mid_run_view()) == (
        "[1:02:03] gpu | cuda:0 94% 31.2/79.6 GiB 654 W 70C | cuda:1 49% 30.6/79.6 GiB 384 W 53C"
        " | cuda:2 47% 16.1/79.6 GiB 372 W 52C | cuda:3 3% 18.9/79.6 GiB 108 W 35C"
    )
    assert gpu_line(replace(mid_run_view(), gpus=())) is None
    printer, out = plain_printer()
    printer.show(mid_run_view())
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1:02:03] | tars") and lines[1].startswith("[1:02:03] gpu | ")


def test_a_cluster_prints_nodes_alive_and_gpus_by_node():
    view = cluster_view()
    assert "| nodes 2/3 alive |" in progress_line(view)
    line = gpu_line(view)
    assert line is not None
    assert "gpu-node-a/cuda:0 90%" in line and "gpu-node-b/cuda:1 84%" in line
    assert "pending: slots 8, 9, 10, 11" in progress_line(view)


def test_eta_without_expected_samples_goes_by_tars_done_this_run():
    view = replace(mid_run_view(), samples_expected=None)
    # 34 tars in 3723 s; 400 - 46 complete - 1 failed = 353 left.
    assert fmt.eta_seconds(view) == 353 * 3723.0 / 34


def test_durations_read_well_from_seconds_to_days():
    assert fmt.duration(0) == "0:00:00"
    assert fmt.duration(3723.9) == "1:02:03"
    assert fmt.duration(2 * 86400 + 3 * 3600 + 4 * 60 + 5) == "2d 03:04:05"
    assert fmt.duration(None) == fmt.duration(float("nan")) == fmt.duration(float("inf")) == "--:--"


def test_events_are_printed_with_time_slot_and_message():
    printer, out = plain_printer()
    printer.on_event(
        Event(1_767_229_323.0, "error", 5, "killed by SIGKILL while on EN-B000045.tar")
    )
    printer.on_event(Event(1_767_229_324.0, "info", None, "total requests: 1000"))
    assert out.getvalue().splitlines() == [
        "01:02:03  slot  5  killed by SIGKILL while on EN-B000045.tar",
        "01:02:04  run      total requests: 1000",
    ]


def test_every_exit_code_has_a_meaning_for_the_summary():
    assert set(EXIT_MEANINGS) == set(ExitCode)


@pytest.mark.parametrize("code", list(ExitCode))
def test_headless_run_prints_lines_events_and_summary_and_returns_the_run_exit_code(code):
    printer, out = plain_printer(interval=0.05)
    supervisor = FakeSupervisor(
        on_event=printer.on_event, step_s=0.01, max_steps=40, sim_step_s=60.0, exit_code=code
    )
    result = asyncio.run(run_headless(supervisor, printer, handle_signals=False))
    text = out.getvalue()
    assert result == code  # the run's code, passed on
    assert text.count("| tars ") >= 2  # periodic progress lines
    assert text.count("] gpu | cuda:0 ") == text.count("| tars ")  # each with its GPU line
    assert "slot  2  EN-B000042.tar done: 25000 samples" in text
    # The printer's own words for the code, once, last but for the table.
    assert text.count("Run finished: ") == 1
    assert f"Run finished: {EXIT_MEANINGS[code]} (exit code {int(code)})" in text
    assert "\x1b[" not in text


def test_live_mode_draws_a_bar_on_a_terminal():
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=True, color_system=None)
    printer = HeadlessPrinter(console, interval=0.05, tz=datetime.UTC)
    assert printer.live
    supervisor = FakeSupervisor(on_event=printer.on_event, step_s=0.01, max_steps=10)
    asyncio.run(run_headless(supervisor, printer, handle_signals=False))
    text = out.getvalue()
    assert "━" in text and "tars 46/400" in text
    assert "samples 917,727/~9,700,000" in text and "ETA ~" in text
    assert "workers 8/9 (backoff: slot 5)" in text and "gpu 48% avg 97/318 GiB" in text
    assert "Run finished: all tars done (exit code 0)" in text


def test_summary_names_the_slots_that_gave_up():
    printer, out = plain_printer()
    view = mid_run_view()
    workers = tuple(
        replace(w, state=WorkerState.FATAL, last_error="model load failed: no BiCodec/config.yaml")
        if w.slot == 8
        else w
        for w in view.workers
    )
    printer.summary(replace(view, workers=workers, finished=True), ExitCode.ALL_FATAL)
    text = out.getvalue()
    assert "Run finished: every worker slot failed (exit code 3)" in text
    assert "slot 8 (cpu) gave up: model load failed: no BiCodec/config.yaml" in text
    assert "34 done, 12 already done, 1 failed, 353 left, of 400" in text


def test_summary_names_failed_tars_from_the_run_result():
    printer, out = plain_printer()
    result = SimpleNamespace(
        exit_code=1,
        tars=[
            SimpleNamespace(tar="EN/EN-B000017.tar", status="failed", reason="killed 3 workers"),
            SimpleNamespace(tar="EN/EN-B000018.tar", status="done", reason=None),
        ],
    )
    printer.summary(replace(mid_run_view(), finished=True), ExitCode.INCOMPLETE, result)
    text = out.getvalue()
    assert "EN/EN-B000017.tar failed: killed 3 workers" in text
    assert "EN-B000018" not in text


def test_summary_suggests_the_next_commands_once_tars_are_done():
    steps = ["tartok-tui decode o --model-dir m --to l --count 5", "tartok-tui export o -f hf"]
    printer, out = plain_printer(next_steps=steps)
    printer.summary(replace(mid_run_view(), finished=True), ExitCode.INCOMPLETE)
    assert out.getvalue().endswith("next:\n  " + "\n  ".join(steps) + "\n")
    printer, out = plain_printer(next_steps=steps)
    nothing = replace(mid_run_view(), finished=True, tars_done=0, tars_skipped=0)
    printer.summary(nothing, ExitCode.ALL_FATAL)
    assert "next:" not in out.getvalue()  # nothing to decode or export yet


def test_ctrl_c_stops_gracefully_then_forcefully():
    printer, _ = plain_printer(interval=10.0)
    # Stopped runs of this fake end with INCOMPLETE: what comes back is the run's own code.
    supervisor = FakeSupervisor(
        on_event=printer.on_event, step_s=0.01, stop_steps=10_000, stopped_code=ExitCode.INCOMPLETE
    )

    async def main() -> int:
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, os.kill, os.getpid(), signal.SIGINT)
        loop.call_later(0.3, os.kill, os.getpid(), signal.SIGINT)
        return await run_headless(supervisor, printer)

    assert asyncio.run(main()) == ExitCode.INCOMPLETE
    assert supervisor.calls == [("request_stop", False), ("request_stop", True)]
    # The handlers are gone afterwards: Ctrl+C is Python's again.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

"""The dashboard's keys, quitting, refreshing and snapshots, driven by a scripted fake supervisor."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
from collections.abc import Callable
from dataclasses import replace

import pytest
from fake_supervisor import FakeSupervisor
from fake_views import cluster_view, fleet_view, mid_run_view, worker
from svg_snapshot import assert_svg_snapshot, settled_screenshot

from tartok_tui.control import SupervisorControl
from tartok_tui.exit_codes import ExitCode
from tartok_tui.supervisor.views import Event, WorkerState
from tartok_tui.tui.app import TartokApp
from tartok_tui.tui.panes import EventLog, new_events
from tartok_tui.tui.screens import ConfirmScreen, HelpScreen
from tartok_tui.tui.table import WorkerTable, device_key, table_rows

SIZE = (160, 44)
UTC = datetime.UTC

# The fake runs below end a stopped run with INCOMPLETE, not the usual INTERRUPTED: the
# dashboard must leave with the run's own exit code, never one it makes up on quitting.
STOPPED_CODE = ExitCode.INCOMPLETE


def make_app(supervisor: FakeSupervisor, **kwargs) -> TartokApp:
    return TartokApp(supervisor, tz=UTC, clock=lambda: 1_767_225_600.0, **kwargs)


def still() -> FakeSupervisor:
    """A fake whose run never moves on by itself (its first tick is an hour away): the
    screen changes only on our keys and on ``advance`` calls made by the test."""
    return FakeSupervisor(sim_step_s=0.0, step_s=3600.0)


async def until(pilot, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Let the app run until ``condition`` holds (generous: the machine may be loaded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out waiting for the dashboard"
        await pilot.pause(0.02)


async def select_slot(pilot, app: TartokApp, slot: int) -> None:
    table = app.query_one(WorkerTable)
    table.move_cursor(row=table.get_row_index(f"slot:{slot}"))
    await pilot.pause()
    assert table.selected_slot() == slot


def test_fake_supervisor_satisfies_the_control_protocol():
    assert isinstance(still(), SupervisorControl)


@pytest.mark.parametrize(
    ("key", "method"),
    [("p", "pause"), ("r", "resume"), ("s", "stop"), ("K", "kill"), ("R", "restart")],
)
async def test_worker_keys_control_the_selected_worker(key, method):
    supervisor = still()
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        await select_slot(pilot, app, 4)
        await pilot.press(key)
        await pilot.pause()
        assert supervisor.calls == [(method, 4)]


async def test_moving_the_cursor_picks_the_worker_the_key_goes_to():
    supervisor = still()
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        # The cursor starts on slot 0 (row 1, under the cuda:0 header); down x3 skips
        # slot 1 and the cuda:1 header to reach slot 2.
        await pilot.press("down", "down", "down", "p")
        await pilot.pause()
        assert supervisor.calls == [("pause", 2)]


@pytest.mark.parametrize(("key", "method"), [("P", "pause_all"), ("U", "resume_all")])
async def test_all_worker_keys(key, method):
    supervisor = still()
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(key)
        await pilot.pause()
        assert supervisor.calls == [(method,)]


async def test_a_worker_key_on_a_device_row_does_nothing():
    supervisor = still()
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(WorkerTable)
        table.move_cursor(row=table.get_row_index(device_key("local", "cuda:1")))
        await pilot.pause()
        await pilot.press("K")
        await pilot.pause()
        assert supervisor.calls == []


async def test_quit_asks_first_and_no_keeps_the_run_going():
    supervisor = still()
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert supervisor.calls == []
        assert app.is_running


async def test_quit_requests_a_stop_and_exits_when_the_run_has_ended():
    supervisor = FakeSupervisor(sim_step_s=0.0, stop_steps=40, stopped_code=STOPPED_CODE)
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q", "y")
        await pilot.pause()
        assert supervisor.calls == [("request_stop", False)]
        # Still showing the run while the workers wind down.
        assert app.is_running and app.stop_requested and app.result is None
        await app.workers.wait_for_complete()
    assert app.result is not None
    assert app.return_code == STOPPED_CODE


async def test_quit_again_while_stopping_offers_to_kill_the_workers():
    supervisor = FakeSupervisor(sim_step_s=0.0, stop_steps=10_000, stopped_code=STOPPED_CODE)
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q", "y")
        await pilot.pause()
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await app.workers.wait_for_complete()
    assert supervisor.calls == [("request_stop", False), ("request_stop", True)]
    assert app.return_code == STOPPED_CODE


async def test_quit_after_a_stop_from_elsewhere_offers_to_kill_not_to_stop_again():
    supervisor = FakeSupervisor(sim_step_s=0.0, stop_steps=10_000)
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        supervisor.request_stop()  # as SIGTERM does
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "Kill the workers now?" in app.screen.question
        await pilot.press("n")
        await pilot.pause()
    assert supervisor.calls == [("request_stop", False)]


class NoticeRecordingApp(TartokApp):
    """Keeps what the dashboard tells its user, to check the words."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.notices: list[tuple[str, str]] = []

    def notify(self, message, *, severity="information", **kwargs) -> None:
        self.notices.append((str(message), severity))
        super().notify(message, severity=severity, **kwargs)


async def test_a_screenshot_that_cannot_be_written_is_reported_and_the_run_goes_on(tmp_path):
    app = NoticeRecordingApp(still(), tz=UTC, screenshot_dir=tmp_path / "missing")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("S")
        await pilot.pause()
        assert app.is_running
        ((message, severity),) = app.notices
        assert message.startswith("screenshot not saved: ") and "missing" in message
        assert severity == "error"
    assert not (tmp_path / "missing").exists()


async def test_ctrl_c_asks_like_q():
    supervisor = still()
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert supervisor.calls == []


async def test_quit_without_live_workers_stops_without_asking():
    view = mid_run_view()
    view = replace(
        view, workers=tuple(replace(w, state=WorkerState.FATAL, pid=None) for w in view.workers)
    )
    supervisor = FakeSupervisor(view, sim_step_s=0.0)
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await app.workers.wait_for_complete()
    assert supervisor.calls == [("request_stop", False)]


@pytest.mark.parametrize("state", [WorkerState.BACKOFF, WorkerState.STALLED, WorkerState.PENDING])
async def test_quit_asks_while_a_slot_waits_to_get_a_process_again(state):
    view = mid_run_view()
    workers = tuple(
        replace(w, state=state if w.slot == 0 else WorkerState.FATAL, pid=None)
        for w in view.workers
    )
    supervisor = FakeSupervisor(replace(view, workers=workers), sim_step_s=0.0, step_s=3600.0)
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert supervisor.calls == []


@pytest.mark.parametrize("code", [ExitCode.OK, ExitCode.INCOMPLETE, ExitCode.ALL_FATAL])
async def test_the_app_exits_with_the_run_exit_code_when_the_run_ends(code):
    supervisor = FakeSupervisor(step_s=0.01, max_steps=3, exit_code=code)
    app = make_app(supervisor)
    async with app.run_test(size=SIZE):
        await app.workers.wait_for_complete()
    assert app.return_code == code
    # The run's last snapshot is the one on screen.
    assert app.view is supervisor.snapshot() and app.view.finished


async def test_a_supervisor_crash_ends_the_app_and_is_kept_for_the_caller():
    supervisor = FakeSupervisor(fail_with=RuntimeError("supervisor bug"), step_s=0.01)
    app = make_app(supervisor)
    async with app.run_test(size=SIZE):
        await app.workers.wait_for_complete()
    assert isinstance(app.error, RuntimeError)
    assert app.return_code == ExitCode.INCOMPLETE


async def test_help_opens_and_closes():
    app = make_app(still())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_the_dashboard_keeps_refreshing_under_the_help_and_its_keys_are_off():
    supervisor = still()
    app = make_app(supervisor, refresh_hz=20.0)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        # A snapshot that exists only from now on: only a refresh under the help shows it.
        supervisor.advance(60.0)
        fresh = supervisor.snapshot()
        assert app.view is not fresh
        await until(pilot, lambda: app.view is fresh)
        assert isinstance(app.screen, HelpScreen)
        cell = app.table.get_cell("slot:4", "samples")  # the dashboard's table, under the help
        assert cell.plain == f"{fresh.workers[4].samples_done:,}"
        await pilot.press("p", "K", "P")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert supervisor.calls == []


async def test_screenshot_key_saves_an_svg(tmp_path):
    app = make_app(still(), screenshot_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("S")
        await pilot.pause()
    (shot,) = tmp_path.glob("*.svg")
    assert shot.name.startswith("tartok-tui-20260101-")
    assert "EN-B000040.tar" in shot.read_text(encoding="utf-8").replace("&#160;", " ")


async def test_rows_update_in_place_and_the_selection_stays_on_its_worker():
    supervisor = still()
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(WorkerTable)
        await select_slot(pilot, app, 4)
        rows_before = table.row_count
        before = table.get_cell("slot:4", "samples").plain
        supervisor.advance(60.0)
        app.refresh_view()
        await pilot.pause()
        assert table.row_count == rows_before
        assert table.selected_slot() == 4
        samples = table.get_cell("slot:4", "samples").plain
        assert samples == f"{supervisor.snapshot().workers[4].samples_done:,}" != before


async def test_selection_survives_a_worker_appearing():
    supervisor = still()
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(WorkerTable)
        await select_slot(pilot, app, 5)
        # A new slot on cuda:0 puts a row above the selection.
        extra = worker(9, "cuda:0", tar_index=90, tar_done=10)
        supervisor.view = replace(supervisor.view, workers=(*supervisor.view.workers, extra))
        app.refresh_view()
        await pilot.pause()
        assert table.selected_slot() == 5
        assert table.get_row_index("slot:9") == 3


async def test_selection_survives_a_terminal_resize():
    app = make_app(still())
    async with app.run_test(size=SIZE) as pilot:
        await select_slot(pilot, app, 6)
        await pilot.resize_terminal(200, 44)
        await pilot.pause()
        assert app.query_one(WorkerTable).selected_slot() == 6


async def test_a_pause_shows_pausing_until_the_worker_acknowledges_then_paused():
    supervisor = still()
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(WorkerTable)
        await select_slot(pilot, app, 2)
        await pilot.press("p")
        await pilot.pause()
        assert table.get_cell("slot:2", "state").plain == "pausing"
        supervisor.advance(0.0)  # the worker's acknowledgement arrives
        app.refresh_view()
        await pilot.pause()
        cell = table.get_cell("slot:2", "state")
        assert cell.plain == "paused"
        assert "yellow" in str(cell.style)


async def test_event_log_shows_each_event_once():
    supervisor = still()
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        log = app.query_one(EventLog)
        lines_before = len(log.lines)
        supervisor.kill(2)  # two events: killed, started again
        app.refresh_view()
        app.refresh_view()
        await pilot.pause()
        assert len(log.lines) == lines_before + 2
        assert "killed (pid 41034)" in log.lines[-2].text
        assert "worker started" in log.lines[-1].text


def test_new_events_finds_what_came_after_the_last_shown():
    a, b, c, d = (Event(float(i), "info", None, f"e{i}") for i in range(4))
    assert new_events(None, (a, b)) == (a, b)
    assert new_events(b, (a, b, c, d)) == (c, d)
    assert new_events(d, (a, b, c, d)) == ()
    # The last shown event scrolled out of the bounded window: everything is new.
    assert new_events(a, (c, d)) == (c, d)


def _shown(cell) -> tuple[str, str]:
    return (cell.plain, str(cell.style)) if hasattr(cell, "plain") else (str(cell), "")


async def test_a_refresh_writes_only_the_cells_that_changed():
    supervisor = FakeSupervisor(fleet_view(8, 2), sim_step_s=0.0, step_s=3600.0)
    app = make_app(supervisor)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.query_one(WorkerTable)
        assert table.row_count == 16 + 8
        # The same figures in a fresh snapshot: nothing to write.
        supervisor.view = replace(supervisor.view)
        app.refresh_view()
        assert table.cells_written == 0
        before = table_rows(supervisor.snapshot())
        supervisor.advance(1.0)
        after = table_rows(supervisor.snapshot())
        app.refresh_view()
        changed = sum(
            _shown(old) != _shown(new)
            for key, cells in after.items()
            for old, new in zip(before[key], cells, strict=True)
        )
        every_cell = sum(len(cells) for cells in after.values())
        assert 0 < table.cells_written == changed < every_cell
        await pilot.pause()


# ---------------------------------------------------------------- SVG snapshots


async def test_snapshot_mid_run():
    app = make_app(
        still(), context="/data/Emilia/EN → /data/tokens/EN   model /models/Spark-TTS-0.5B"
    )
    async with app.run_test(size=SIZE) as pilot:
        await select_slot(pilot, app, 5)
        assert_svg_snapshot("dashboard_mid_run", await settled_screenshot(app, pilot))


async def test_snapshot_sixteen_workers():
    app = make_app(FakeSupervisor(fleet_view(8, 2), sim_step_s=0.0, step_s=3600.0))
    async with app.run_test(size=(160, 40)) as pilot:
        assert_svg_snapshot("dashboard_sixteen_workers", await settled_screenshot(app, pilot))


async def test_snapshot_cluster():
    app = make_app(FakeSupervisor(cluster_view(), sim_step_s=0.0, step_s=3600.0))
    async with app.run_test(size=(160, 40)) as pilot:
        assert_svg_snapshot("dashboard_cluster", await settled_screenshot(app, pilot))


async def test_snapshot_help():
    app = make_app(still())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert_svg_snapshot("dashboard_help", await settled_screenshot(app, pilot))


async def test_snapshot_quit_confirmation():
    app = make_app(still())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        assert_svg_snapshot("dashboard_quit_confirm", await settled_screenshot(app, pilot))


async def test_sigterm_stops_the_run_cleanly_like_q():
    supervisor = FakeSupervisor(sim_step_s=0.0, stopped_code=STOPPED_CODE)
    app = make_app(supervisor, handle_signals=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        os.kill(os.getpid(), signal.SIGTERM)
        await app.workers.wait_for_complete()
    assert supervisor.calls == [("request_stop", False)]
    assert app.return_code == STOPPED_CODE
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

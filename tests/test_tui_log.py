"""The log pane: a worker's log file followed as it grows, without blocking the dashboard."""

from __future__ import annotations

import asyncio
import datetime
import os
from collections.abc import Callable
from pathlib import Path

from fake_supervisor import FakeSupervisor

from tartok_tui.tui.app import TartokApp
from tartok_tui.tui.log_pane import LogTail, WorkerLogPane
from tartok_tui.tui.screens import HelpScreen

SIZE = (160, 44)


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


# ---------------------------------------------------------------- the tail itself


async def test_a_missing_file_is_reported_then_followed_once_it_appears(tmp_path):
    path = tmp_path / "worker-0.log"
    tail = LogTail(path)
    assert (await tail.read()).missing
    append(path, "loading\nready\n")
    read = await tail.read()
    assert (read.missing, read.lines) == (False, ["loading", "ready"])
    assert (await tail.read()).lines == []  # nothing new


async def test_only_what_was_appended_is_read_and_a_line_waits_for_its_end(tmp_path):
    path = tmp_path / "w.log"
    append(path, "one\n")
    tail = LogTail(path)
    assert (await tail.read()).lines == ["one"]
    append(path, "two\nthr")
    assert (await tail.read()).lines == ["two"]
    append(path, "ee\n")
    assert (await tail.read()).lines == ["three"]


async def test_a_truncated_file_is_read_again_from_its_start(tmp_path):
    path = tmp_path / "w.log"
    append(path, "a long first life of this log\n" * 3)
    tail = LogTail(path)
    assert len((await tail.read()).lines) == 3
    path.write_text("after truncation\n", encoding="utf-8")
    read = await tail.read()
    assert read.restarted and read.lines == ["after truncation"]


async def test_a_replaced_file_is_read_from_its_start(tmp_path):
    path = tmp_path / "w.log"
    append(path, "old\n")
    tail = LogTail(path)
    await tail.read()
    fresh = tmp_path / "new.log"
    fresh.write_text("new one, longer than the old\nsecond\n", encoding="utf-8")
    os.replace(fresh, path)
    read = await tail.read()
    assert read.restarted and read.lines == ["new one, longer than the old", "second"]


async def test_a_big_existing_log_is_shown_from_near_its_end_on_whole_lines(tmp_path):
    path = tmp_path / "w.log"
    append(path, "".join(f"line {i:05d}\n" for i in range(10_000)))
    read = await LogTail(path, start_bytes=100).read()
    assert read.lines[-1] == "line 09999"
    assert all(line.startswith("line ") and len(line) == 10 for line in read.lines)
    assert len(read.lines) <= 10


async def test_a_carriage_return_shows_what_a_terminal_would(tmp_path):
    path = tmp_path / "w.log"
    append(path, "progress 10%\rprogress 55%\rprogress 100%\n")
    assert (await LogTail(path).read()).lines == ["progress 100%"]


async def test_a_reader_that_falls_behind_catches_up_in_bounded_reads(tmp_path):
    path = tmp_path / "w.log"
    tail = LogTail(path, chunk_bytes=64)
    append(path, "")
    await tail.read()
    append(path, "".join(f"{i:09d}\n" for i in range(100)))  # 1000 bytes
    lines: list[str] = []
    for _ in range(20):
        lines += (await tail.read()).lines
    assert lines == [f"{i:09d}" for i in range(100)]


# ---------------------------------------------------------------- the pane in the dashboard


async def until(pilot, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out waiting for the log pane"
        await pilot.pause(0.02)


def pane_text(app: TartokApp) -> str:
    return "\n".join(line.text for line in app.query_one(WorkerLogPane).lines)


async def test_l_shows_the_selected_workers_log_as_it_grows_and_follows_the_selection(tmp_path):
    logs = {slot: tmp_path / f"worker-{slot}.log" for slot in range(9)}
    append(logs[2], "slot 2 ready on cuda:1\n")
    app = TartokApp(
        FakeSupervisor(sim_step_s=0.0, step_s=3600.0),
        tz=datetime.UTC,
        log_path_for=logs.__getitem__,
        log_poll_s=0.05,
    )
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(WorkerLogPane)
        table = app.table
        table.move_cursor(row=table.get_row_index("slot:2"))
        await pilot.pause()
        assert not pane.display
        await pilot.press("l")
        await until(pilot, lambda: "slot 2 ready on cuda:1" in pane_text(app))
        assert pane.display and "worker-2.log" in str(pane.border_title)

        # Appended while shown: it appears, each line once.
        for i in range(5):
            append(logs[2], f"batch {i} done\n")
            await until(pilot, lambda i=i: f"batch {i} done" in pane_text(app))
        assert pane_text(app).count("batch 3 done") == 1

        # Truncated (as copytruncate does): said, then read from the start.
        logs[2].write_text("fresh\n", encoding="utf-8")
        await until(pilot, lambda: "fresh" in pane_text(app))
        assert "log truncated or replaced" in pane_text(app)

        # Another worker selected: its log, from the start of the pane; it has none yet.
        table.move_cursor(row=table.get_row_index("slot:4"))
        await until(pilot, lambda: "does not exist yet" in pane_text(app))
        assert "batch" not in pane_text(app) and "worker-4.log" in str(pane.border_title)
        append(logs[4], "slot 4 started\n")
        await until(pilot, lambda: "slot 4 started" in pane_text(app))

        await pilot.press("l")
        await pilot.pause()
        assert not pane.display


async def test_polling_a_log_does_not_block_the_dashboard(tmp_path):
    """A slow read (a stalled network filesystem) must leave the event loop free."""
    log = tmp_path / "worker-0.log"
    append(log, "hello\n")
    app = TartokApp(
        FakeSupervisor(sim_step_s=0.0, step_s=3600.0),
        tz=datetime.UTC,
        log_path_for=lambda slot: log,
        log_poll_s=0.05,
    )
    gate = asyncio.Event()

    class SlowTail(LogTail):
        async def read(self):
            await gate.wait()
            return await super().read()

    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(WorkerLogPane)
        pane.slot, pane.tail = 0, SlowTail(log)  # what l would follow for slot 0, but slow
        await pilot.press("l")
        await pilot.pause(0.2)  # polls are waiting on the read
        await pilot.press("question_mark")  # the dashboard still answers keys meanwhile
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert "hello" not in pane_text(app)
        await pilot.press("escape")
        gate.set()
        await until(pilot, lambda: "hello" in pane_text(app))


async def test_without_log_paths_l_says_so(tmp_path):
    app = TartokApp(FakeSupervisor(sim_step_s=0.0, step_s=3600.0), tz=datetime.UTC)
    notices: list[str] = []
    app.notify = lambda message, **kwargs: notices.append(message)  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("l")
        await pilot.pause()
        assert not app.query_one(WorkerLogPane).display
    assert notices == ["This dashboard was not told where the worker logs are."]

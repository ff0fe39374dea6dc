"""What the dashboard shows of a snapshot: states, progress age, samples, latency, the speed
graph, GPU readings, nodes, and the help built from the bindings."""

from __future__ import annotations

import datetime
import io
from dataclasses import replace

import pytest
from fake_supervisor import FakeSupervisor
from fake_views import cluster_view, fleet_view, gpu, mid_run_view
from rich.console import Console
from textual.binding import Binding

from tartok_tui import formatting as fmt
from tartok_tui.supervisor.views import GpuView, WorkerState
from tartok_tui.tui.actions import DASHBOARD_KEYS, TABLE_KEYS
from tartok_tui.tui.app import TartokApp
from tartok_tui.tui.header import BLOCKS, render_header, sparkline
from tartok_tui.tui.panes import WorkerDetail, worker_detail
from tartok_tui.tui.screens import HelpScreen, help_rows
from tartok_tui.tui.table import device_key, node_key, table_rows

SIZE = (160, 44)


def header_text(view, width: int = 160) -> str:
    console = Console(width=width, color_system=None, file=io.StringIO())
    console.print(render_header(view))
    return console.file.getvalue()


def cell(view, row: str, column: str) -> str:
    from tartok_tui.tui.table import COLUMN_KEYS

    value = table_rows(view)[row][COLUMN_KEYS.index(column)]
    return value if isinstance(value, str) else value.plain


def make_app(view) -> TartokApp:
    supervisor = FakeSupervisor(view, sim_step_s=0.0, step_s=3600.0)
    return TartokApp(supervisor, tz=datetime.UTC, clock=lambda: 0.0)


# ---------------------------------------------------------------- states


def test_every_state_has_a_colour_and_a_meaning_in_the_legend():
    assert set(fmt.STATE_LEGEND) == set(WorkerState)
    for state, (style, meaning) in fmt.STATE_LEGEND.items():
        assert style and meaning, state


def test_alive_states_are_the_ones_with_a_process_and_in_play_adds_those_that_get_one_back():
    assert {s for s in WorkerState if s.alive} == fmt.ALIVE_STATES
    assert {
        WorkerState.PENDING,
        WorkerState.BACKOFF,
        WorkerState.STALLED,
    } == fmt.IN_PLAY_STATES - fmt.ALIVE_STATES
    assert WorkerState.FATAL not in fmt.IN_PLAY_STATES
    assert WorkerState.DONE not in fmt.IN_PLAY_STATES


def test_new_states_are_shown_in_their_colour():
    view = mid_run_view()
    states = {0: WorkerState.PAUSING, 1: WorkerState.STALLED, 2: WorkerState.PENDING}
    view = replace(
        view,
        workers=tuple(replace(w, state=states.get(w.slot, w.state)) for w in view.workers),
    )
    rows = table_rows(view)
    for slot, state in states.items():
        shown = rows[f"slot:{slot}"][3]
        assert shown.plain == state.value
        assert str(shown.style) == fmt.STATE_STYLES[state]


def test_a_throttled_worker_shows_a_state_with_its_retry_not_an_error():
    view = mid_run_view()
    what = "429 uploading s3://b/tokens/EN-B000001.jsonl"
    worker = replace(view.workers[0], throttled=what, throttle_retry_at=view.now + 40.4)
    view = replace(view, workers=(worker, *view.workers[1:]))
    shown = table_rows(view)["slot:0"]
    assert shown[3].plain == "throttled" and str(shown[3].style) == fmt.THROTTLED_STYLE
    assert shown[-1].plain == (worker.last_error or "")  # not an error
    detail = worker_detail(view, worker).plain
    assert f"throttled (retry in 40 s) by its store: {what}" in detail
    # Throttled only shows over RUNNING: a worker told to stop says so.
    stopping = replace(worker, state=WorkerState.STOPPING)
    assert fmt.state_label(stopping) == ("stopping", fmt.STATE_STYLES[WorkerState.STOPPING])


async def test_the_help_lists_every_key_and_explains_every_state():
    app = make_app(mid_run_view())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        rows = dict((help_text, keys) for keys, help_text in app.screen.rows)
        text = app.export_screenshot().replace("&#160;", " ")
    for key in (*DASHBOARD_KEYS, *TABLE_KEYS):
        assert key.help in rows or not key.show, key  # a hidden alias shares its action's row
    assert rows["this help"] == "?"
    assert rows["select the worker above"] == "↑"  # the table's own keys, with their help
    assert rows[DASHBOARD_KEYS[-2].help] == "q ^c ^q"  # q first, its hidden aliases after
    assert rows["show or hide the selected worker's log file"] == "l"
    for state, (_, meaning) in fmt.STATE_LEGEND.items():
        assert meaning in text, state
    assert fmt.THROTTLED_MEANING in text


def test_help_rows_follow_the_bindings_not_a_list_of_their_own():
    bindings = [
        Binding("ctrl+c", "quit", "Quit", show=False, tooltip="quit"),
        Binding("x", "explode", "Boom", tooltip="a key added later"),
        Binding("q", "quit", "Quit", tooltip="quit cleanly"),
        Binding("z", "silent", "No help"),
    ]
    rows = help_rows(bindings, lambda b: b.key)
    assert rows == [("x", "a key added later"), ("q ctrl+c", "quit cleanly")]


# ---------------------------------------------------------------- progress age


def test_time_since_last_progress_is_shown_and_warned_about_past_a_minute():
    view = mid_run_view()
    rows = table_rows(view)
    stuck = rows["slot:6"][10]  # 84 s without progress
    assert stuck.plain == "1m24s" and "yellow" in str(stuck.style)
    fine = rows["slot:0"][10]
    assert fine.plain == "0s" and str(fine.style) == ""
    assert rows["slot:3"][10].plain == "-"  # paused: nothing to progress on
    assert rows["slot:7"][10].plain == "8s"  # loading counts as progress to make


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.4, "0s"), (59.9, "59s"), (60, "1m00s"), (3599, "59m59s"), (7500, "2h05m")],
)
def test_ages_read_well(seconds, text):
    assert fmt.age(seconds) == text


# ---------------------------------------------------------------- samples, latency


def test_an_estimated_sample_total_is_marked_and_so_is_the_eta():
    view = mid_run_view()
    assert view.samples_expected_is_estimate
    text = header_text(view)
    assert "917,727/~9,700,000" in text and "(total estimated)" in text
    assert "ETA ~9:53:47" in text


def test_a_counted_sample_total_is_shown_plainly():
    view = replace(mid_run_view(), samples_expected_is_estimate=False)
    text = header_text(view)
    assert "917,727/9,700,000" in text and "estimated" not in text
    assert "ETA 9:53:47" in text and "~" not in text


def test_before_any_tar_is_counted_there_is_no_samples_bar():
    view = replace(mid_run_view(), samples_expected=None, samples_expected_is_estimate=False)
    text = header_text(view)
    assert "917,727  (total not counted yet)" in text
    samples_line = next(line for line in text.splitlines() if line.startswith("Samples"))
    assert "━" not in samples_line


def test_latency_is_named_per_sample_in_the_table_and_per_batch_in_the_detail():
    from tartok_tui.tui.panes import worker_detail
    from tartok_tui.tui.table import COLUMNS

    assert ("latency", "Lat/smp", 8) in COLUMNS
    view = mid_run_view()
    assert cell(view, "slot:8", "latency") == "322.6 ms"
    detail = worker_detail(view, view.workers[8]).plain
    assert "avg latency 322.6 ms/sample (wall), 6,968 ms/batch (model)" in detail


# ---------------------------------------------------------------- the speed graph


def test_sparkline_scales_to_the_peak_and_marks_intervals_without_progress():
    line = sparkline([0.0, 50.0, 100.0, 25.0])
    assert line.plain == BLOCKS[0] + BLOCKS[4] + BLOCKS[7] + BLOCKS[2]
    zero = line.spans[0]
    assert (zero.start, zero.end, str(zero.style)) == (0, 1, "red")
    assert sparkline([]).plain == ""
    assert sparkline([0.0, 0.0]).plain == BLOCKS[0] * 2
    assert sparkline([3.0] * 5).plain == BLOCKS[-1] * 5


def test_sparkline_shows_the_most_recent_values_that_fit():
    values = [float(i) for i in range(100)]
    assert len(sparkline(values, width=10).plain) == 10
    assert sparkline(values, width=10).plain[-1] == BLOCKS[-1]  # 99 is the peak of the last 10


def test_the_header_draws_the_throughput_and_says_what_it_covers():
    view = mid_run_view()
    text = header_text(view)
    speed = next(line for line in text.splitlines() if line.startswith("Speed"))
    assert sparkline(view.throughput).plain in speed
    assert "last 5 min, now 1,750×, peak 2,730×" in speed
    short = replace(view, throughput=view.throughput[:3])
    assert "graph: last 30 s, now 2,730×" in header_text(short)
    stalled = replace(view, throughput=(*view.throughput[:-3], 0.0, 0.0, 0.0))
    assert sparkline(stalled.throughput).plain.endswith(BLOCKS[0] * 3)


# ---------------------------------------------------------------- GPU readings


def test_each_device_row_carries_its_gpu_readings():
    view = mid_run_view()
    assert cell(view, device_key("local", "cuda:0"), "tar") == "94% 654W 70°C"
    assert cell(view, device_key("local", "cuda:0"), "in_tar") == "31.2/79.6 GiB"
    assert cell(view, device_key("local", "cuda:3"), "tar") == "3% 108W 35°C"
    assert cell(view, device_key("local", "cpu"), "tar") == ""


def test_gpu_readings_nvml_does_not_give_are_left_out():
    partial = GpuView("cuda:0", "Some GPU", 55.0, None, None, None, 61.0)
    view = replace(mid_run_view(), gpus=(partial,))
    assert cell(view, device_key("local", "cuda:0"), "tar") == "55% 61°C"
    assert cell(view, device_key("local", "cuda:0"), "in_tar") == ""
    assert cell(view, device_key("local", "cuda:1"), "tar") == ""  # no reading for it
    assert fmt.gpu_figures(GpuView("cuda:0", "x", None, None, None, None, None)) == "no readings"


async def test_selecting_a_device_row_shows_the_gpu_in_full():
    app = make_app(mid_run_view())
    async with app.run_test(size=SIZE) as pilot:
        app.table.move_cursor(row=app.table.get_row_index(device_key("local", "cuda:1")))
        await pilot.pause()
        text = str(app.query_one(WorkerDetail).render())
    assert "cuda:1  NVIDIA H100 80GB HBM3" in text
    assert "49% 30.6/79.6 GiB 384 W 53°C" in text
    assert "slots 2, 3" in text


def test_a_gpu_on_another_node_is_not_taken_for_this_one():
    view = replace(mid_run_view(), gpus=(gpu("cuda:0", 77, 10.0, node="elsewhere"),))
    assert cell(view, device_key("local", "cuda:0"), "tar") == ""


# ---------------------------------------------------------------- nodes


def test_one_machine_has_no_node_rows():
    rows = list(table_rows(mid_run_view()))
    assert not any(key.startswith("node:") for key in rows)
    assert rows[:3] == [device_key("local", "cuda:0"), "slot:0", "slot:1"]


def test_a_cluster_is_grouped_by_node_then_device():
    view = cluster_view()
    rows = list(table_rows(view))
    assert rows[:8] == [
        node_key("gpu-node-a"),
        device_key("gpu-node-a", "cuda:0"),
        "slot:0",
        "slot:1",
        device_key("gpu-node-a", "cuda:1"),
        "slot:2",
        "slot:3",
        node_key("gpu-node-b"),
    ]
    assert len(rows) == 3 + 6 + 12
    assert cell(view, node_key("gpu-node-c"), "tar") == "gpu-node-c"
    assert cell(view, node_key("gpu-node-c"), "in_tar") == "0 alive"
    assert cell(view, node_key("gpu-node-a"), "state") == "4/4 run"
    # The same cuda:0 on two machines: each row gets its own machine's GPU.
    assert cell(view, device_key("gpu-node-a", "cuda:0"), "tar").startswith("90%")
    assert cell(view, device_key("gpu-node-b", "cuda:0"), "tar").startswith("91%")


def test_the_header_shows_nodes_alive_on_a_cluster_only():
    assert "nodes 2/3 alive" in header_text(cluster_view())
    assert "nodes" not in header_text(mid_run_view())
    assert "nodes" not in header_text(fleet_view())

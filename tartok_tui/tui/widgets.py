"""The dashboard's panes, each a view of one ``RunView`` snapshot."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from itertools import groupby

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual.widgets import DataTable, RichLog, Static

from tartok_tui import formatting as fmt
from tartok_tui.supervisor.views import Event, RunView, WorkerState, WorkerView

BAR_WIDTH = 32


def _bar(completed: float, total: float, style: str = "bar.complete") -> ProgressBar:
    return ProgressBar(
        total=max(total, 1), completed=completed, width=BAR_WIDTH, complete_style=style
    )


class RunHeader(Static):
    """What is being run, overall progress, throughput, memory and time."""

    def __init__(self, context: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.context = context

    def show(self, view: RunView) -> None:
        self.update(self.render_view(view, self.context))

    @staticmethod
    def render_view(view: RunView, context: str | None = None) -> Group:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", width=8)
        grid.add_column(width=BAR_WIDTH)
        grid.add_column()
        complete = fmt.tars_complete(view)
        tar_note = f"  ({view.tars_skipped:,} already done" + (
            f", [red]{view.tars_failed:,} failed[/])" if view.tars_failed else ")"
        )
        grid.add_row(
            "Tars",
            _bar(complete, view.tars_total),
            Text.from_markup(
                f"{complete:,}/{view.tars_total:,}  "
                f"{100 * complete / max(view.tars_total, 1):5.1f}%{tar_note}"
            ),
        )
        if view.samples_expected:
            samples = Text(
                f"{view.samples_done:,}/{view.samples_expected:,}  {100 * fmt.fraction_done(view):5.1f}%"
            )
            bar = _bar(view.samples_done, view.samples_expected)
        else:
            samples = Text(f"{view.samples_done:,}")
            bar = _bar(0, 1)
        samples.append(f"  errors {view.errors:,}", style="yellow" if view.errors else "dim")
        samples.append(f"   ETA {fmt.duration(fmt.eta_seconds(view))}", style="bold")
        grid.add_row("Samples", bar, samples)
        memory_style = "red" if view.memory_bytes > 0.9 * view.memory_limit_bytes else "green"
        restarts = sum(w.restarts for w in view.workers)
        grid.add_row(
            "Memory",
            _bar(view.memory_bytes, view.memory_limit_bytes, memory_style),
            Text(
                f"{fmt.gib(view.memory_bytes)} of {fmt.gib(view.memory_limit_bytes)}   "
                f"workers {fmt.workers_alive(view)}/{len(view.workers)} alive, {restarts} restarts"
            ),
        )
        speed = Text()
        speed.append(f"{view.samples_per_second:,.1f}", style="bold cyan")
        speed.append(" samples/s   ")
        speed.append(f"{view.realtime_factor:,.0f}×", style="bold cyan")
        speed.append(f" real time   {fmt.audio_amount(view.audio_seconds)} of audio done")
        speed.append(f" ({fmt.audio_hours_per_hour(view):,.0f} h per hour)")
        grid.add_row("Speed", "", speed)
        state_style = "bold green" if not view.stopping and not view.finished else "bold yellow"
        elapsed = Text(fmt.duration(view.elapsed))
        elapsed.append("   ")
        elapsed.append(fmt.run_state(view), style=state_style)
        grid.add_row("Elapsed", "", elapsed)
        if not context:
            return Group(grid)
        # The label column is 8 wide plus 1 of padding: line the context up with the rows.
        line = Text.assemble(("Run", "bold"), " " * 6, context, overflow="ellipsis", no_wrap=True)
        return Group(line, grid)


# (key, label, width); the last column takes what is left.
COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("slot", "Slot", 4),
    ("device", "Device", 6),
    ("pid", "PID", 7),
    ("state", "State", 8),
    ("tar", "Tar", 15),
    ("in_tar", "In tar", 18),
    ("tars", "Tars", 5),
    ("samples", "Samples", 10),
    ("latency", "ms/smp", 7),
    ("rtf", "×RT", 6),
    ("rss", "RSS", 8),
    ("gpu", "GPU mem", 8),
    ("restarts", "Rst", 3),
    ("error", "Last error", None),
)
ERROR_MIN_WIDTH = 12
COLUMN_KEYS = tuple(key for key, _, _ in COLUMNS)


def worker_cells(w: WorkerView) -> tuple[Text | str, ...]:
    """One worker's row, in COLUMNS order."""
    alive = w.state in fmt.ALIVE_STATES
    return (
        Text(str(w.slot), justify="right"),
        w.device,
        Text(str(w.pid) if w.pid is not None else "-", justify="right"),
        Text(w.state.value, style=fmt.STATE_STYLES.get(w.state, "")),
        w.tar or "",
        Text(fmt.tar_progress(w), justify="right"),
        Text(f"{w.tars_done:,}", justify="right"),
        Text(f"{w.samples_done:,}", justify="right"),
        Text(f"{w.avg_latency_ms:.1f}" if w.samples_done else "-", justify="right"),
        Text(f"{w.realtime_factor:,.0f}" if w.samples_done else "-", justify="right"),
        Text(fmt.gib(w.rss_bytes) if alive and w.rss_bytes else "-", justify="right"),
        Text(f"{w.gpu_mem_mb / 1024:.1f} GiB" if w.gpu_mem_mb else "-", justify="right"),
        Text(str(w.restarts), justify="right", style="yellow" if w.restarts else ""),
        Text(w.last_error or "", style="red", no_wrap=True, overflow="ellipsis"),
    )


def group_cells(device: str, workers: list[WorkerView]) -> tuple[Text | str, ...]:
    """A device's separator row: its name and the sums over its workers."""
    style = "bold reverse"
    running = sum(1 for w in workers if w.state == WorkerState.RUNNING)
    rss = sum(w.rss_bytes for w in workers)
    gpu = sum(w.gpu_mem_mb for w in workers)
    cells: dict[str, Text] = {key: Text("", style=style) for key in COLUMN_KEYS}
    cells["device"] = Text(device, style=style)
    cells["state"] = Text(f"{running}/{len(workers)} run", style=style)
    cells["tars"] = Text(f"{sum(w.tars_done for w in workers):,}", style=style, justify="right")
    cells["samples"] = Text(
        f"{sum(w.samples_done for w in workers):,}", style=style, justify="right"
    )
    cells["rtf"] = Text(
        f"{sum(w.realtime_factor for w in workers if w.state == WorkerState.RUNNING):,.0f}",
        style=style,
        justify="right",
    )
    cells["rss"] = Text(fmt.gib(rss), style=style, justify="right")
    cells["gpu"] = Text(f"{gpu / 1024:.1f} GiB" if gpu else "-", style=style, justify="right")
    cells["restarts"] = Text(str(sum(w.restarts for w in workers)), style=style, justify="right")
    return tuple(cells[key] for key in COLUMN_KEYS)


def _same(a: Text | str, b: Text | str) -> bool:
    """Equal as displayed; rich's Text equality ignores the base style (the state colour)."""
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain == b.plain and str(a.style) == str(b.style) and a.spans == b.spans
    return a == b


def slot_key(slot: int) -> str:
    return f"slot:{slot}"


def group_key(device: str) -> str:
    return f"device:{device}"


def grouped(workers: Iterable[WorkerView]) -> list[tuple[str, list[WorkerView]]]:
    """Workers by device, GPUs in index order then the CPU; slots ascending within."""
    ordered = sorted(workers, key=lambda w: (fmt.device_sort_key(w.device), w.slot))
    return [(device, list(ws)) for device, ws in groupby(ordered, key=lambda w: w.device)]


class WorkerTable(DataTable):
    """One row per worker under a separator row per device, updated in place by key.

    Rows are rebuilt only when the set of slots or their devices changes;
    otherwise only the cells that changed are written, so the cursor stays put.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._error_width = 40
        self._add_columns()
        self._layout: tuple[tuple[str, tuple[int, ...]], ...] = ()
        self._cells: dict[str, tuple] = {}
        self._view: RunView | None = None

    def _add_columns(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width if width is not None else self._error_width)

    def on_resize(self) -> None:
        """Give the last-error column whatever width the others leave."""
        fixed = sum(width + 2 * self.cell_padding for _, _, width in COLUMNS if width is not None)
        scrollbar = 2  # room for the vertical scrollbar so that no horizontal one appears
        width = max(ERROR_MIN_WIDTH, self.size.width - fixed - 2 * self.cell_padding - scrollbar)
        if width == self._error_width:
            return
        self._error_width = width
        # Column widths are fixed once added; rebuild the columns, then the rows,
        # keeping the cursor on the same worker.
        selected = self.selected_key()
        self.clear(columns=True)
        self._add_columns()
        self._layout = ()
        if self._view is not None:
            self.show(self._view, selected)

    def show(self, view: RunView, selected: str | None = None) -> None:
        """Bring the rows up to ``view``; ``selected``: the row key to keep the cursor on
        when rows are rebuilt (default: the one under the cursor now)."""
        self._view = view
        groups = grouped(view.workers)
        layout = tuple((device, tuple(w.slot for w in ws)) for device, ws in groups)
        rows: dict[str, tuple] = {}
        for device, ws in groups:
            rows[group_key(device)] = group_cells(device, ws)
            for w in ws:
                rows[slot_key(w.slot)] = worker_cells(w)
        if layout != self._layout:
            self._rebuild(rows, selected if selected is not None else self.selected_key())
            self._layout = layout
        else:
            for row_key, cells in rows.items():
                old = self._cells.get(row_key)
                for index, value in enumerate(cells):
                    if old is None or not _same(old[index], value):
                        self.update_cell(row_key, COLUMN_KEYS[index], value)
        self._cells = rows

    def _rebuild(self, rows: dict[str, tuple], selected: str | None) -> None:
        self.clear()
        for row_key, cells in rows.items():
            self.add_row(*cells, key=row_key)
        if selected is not None and selected in rows:
            self.move_cursor(row=self.get_row_index(selected), animate=False)
        elif len(rows) > 1:
            self.move_cursor(row=1, animate=False)  # the first worker, not its device header

    def selected_key(self) -> str | None:
        if self.row_count == 0:
            return None
        row_key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return row_key.value

    def selected_slot(self) -> int | None:
        """The slot under the cursor, or None on a device row."""
        key = self.selected_key()
        if key is None or not key.startswith("slot:"):
            return None
        return int(key.removeprefix("slot:"))


class WorkerDetail(Static):
    """The selected worker in full: what the table truncates."""

    def show(self, view: RunView, slot: int | None) -> None:
        worker = next((w for w in view.workers if w.slot == slot), None)
        if worker is None:
            self.update(Text("select a worker row for its details", style="dim"))
            return
        text = Text()
        text.append(f"slot {worker.slot}", style="bold")
        text.append(f"  {worker.device}  pid {worker.pid or '-'}  ")
        text.append(worker.state.value, style=fmt.STATE_STYLES.get(worker.state, ""))
        if worker.state == WorkerState.BACKOFF and worker.backoff_until is not None:
            text.append(f" (restart in {max(0.0, worker.backoff_until - view.now):.0f} s)")
        text.append(
            f"  batch {worker.avg_batch_ms:,.0f} ms  errors {worker.errors:,}  "
            f"audio {fmt.audio_amount(worker.audio_seconds)}"
        )
        if worker.tar:
            text.append(f"  on {worker.tar}")
        if worker.last_error:
            text.append("  last error: ", style="bold red")
            text.append(worker.last_error, style="red")
        self.update(text)


class EventLog(RichLog):
    """Starts, restarts, errors, memory cleanups, recycles: appended as they arrive.

    Snapshots carry the most recent events only, so new ones are found by
    matching the last event already shown.
    """

    def __init__(self, *, tz: datetime.tzinfo | None = None, **kwargs) -> None:
        super().__init__(max_lines=1000, wrap=False, markup=False, highlight=False, **kwargs)
        self.tz = tz
        self._last: Event | None = None

    def show(self, events: tuple[Event, ...]) -> None:
        for event in new_events(self._last, events):
            self.write(fmt.event_text(event, self.tz))
            self._last = event


def new_events(last_shown: Event | None, events: tuple[Event, ...]) -> tuple[Event, ...]:
    """The events after ``last_shown``; all of them when it has scrolled out of the window."""
    if last_shown is None:
        return events
    for index in range(len(events) - 1, -1, -1):
        if events[index] == last_shown:
            return events[index + 1 :]
    return events

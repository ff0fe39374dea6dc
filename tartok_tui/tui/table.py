"""The worker table: a row per worker under a row per device (and per node on a cluster).

Rows are keyed (``slot:N``, ``device:NODE/DEVICE``, ``node:NODE``) and updated in place,
so the cursor stays on its worker while the numbers change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby
from typing import ClassVar, Unpack

from rich.text import Text
from textual.binding import BindingType
from textual.widgets import DataTable

from tartok_tui import formatting as fmt
from tartok_tui.supervisor.views import RunView, WorkerState, WorkerView
from tartok_tui.tui.actions import TABLE_KEYS
from tartok_tui.tui.keywords import WidgetKeywords

# (key, label, width); the last column takes what is left.
COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("slot", "Slot", 4),
    ("device", "Device", 6),
    ("pid", "PID", 7),
    ("state", "State", 9),
    ("tar", "Tar", 15),
    ("in_tar", "In tar", 18),
    ("tars", "Tars", 5),
    ("samples", "Samples", 10),
    ("latency", "Lat/smp", 8),
    ("rtf", "×RT", 6),
    ("progress", "Last prog", 9),
    ("rss", "RSS", 8),
    ("gpu", "GPU mem", 8),
    ("restarts", "Rst", 3),
    ("error", "Last error", None),
)
ERROR_MIN_WIDTH = 12
COLUMN_KEYS = tuple(key for key, _, _ in COLUMNS)

Cells = tuple[Text | str, ...]


def worker_cells(w: WorkerView) -> Cells:
    """One worker's row, in COLUMNS order."""
    alive = w.state in fmt.ALIVE_STATES
    state, state_style = fmt.state_label(w)
    return (
        Text(str(w.slot), justify="right"),
        w.device,
        Text(str(w.pid) if w.pid is not None else "-", justify="right"),
        Text(state, style=state_style),
        w.tar or "",
        Text(fmt.tar_progress(w), justify="right"),
        Text(f"{w.tars_done:,}", justify="right"),
        Text(f"{w.samples_done:,}", justify="right"),
        Text(f"{w.avg_latency_ms:,.1f} ms" if w.samples_done else "-", justify="right"),
        Text(f"{w.realtime_factor:,.0f}" if w.samples_done else "-", justify="right"),
        Text(fmt.age(w.progress_age_s), justify="right", style=fmt.progress_age_style(w)),
        Text(fmt.gib(w.rss_bytes) if alive and w.rss_bytes else "-", justify="right"),
        Text(f"{w.gpu_mem_mb / 1024:.1f} GiB" if w.gpu_mem_mb else "-", justify="right"),
        Text(str(w.restarts), justify="right", style="yellow" if w.restarts else ""),
        Text(w.last_error or "", style="red", no_wrap=True, overflow="ellipsis"),
    )


def _sum_cells(workers: list[WorkerView], style: str) -> dict[str, Text]:
    """The cells a group row sums over its workers."""
    running = sum(1 for w in workers if w.state == WorkerState.RUNNING)
    rss = sum(w.rss_bytes for w in workers)
    gpu = sum(w.gpu_mem_mb for w in workers)
    cells: dict[str, Text] = {key: Text("", style=style) for key in COLUMN_KEYS}
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
    return cells


DEVICE_STYLE = "bold reverse"
NODE_STYLE = "bold white on dark_blue"


def device_cells(view: RunView, group: Group) -> Cells:
    """A device's separator row: its GPU's readings (utilisation, power, temperature under
    Tar; memory used/total under In tar) and the sums over its workers."""
    cells = _sum_cells(group.workers, DEVICE_STYLE)
    cells["device"] = Text(group.device, style=DEVICE_STYLE)
    gpu = fmt.gpu_for(view, group.node, group.device)
    if gpu is not None:
        load = [
            f"{gpu.utilization_pct:.0f}%" if gpu.utilization_pct is not None else "",
            f"{gpu.power_w:.0f}W" if gpu.power_w is not None else "",
            f"{gpu.temperature_c:.0f}°C" if gpu.temperature_c is not None else "",
        ]
        cells["tar"] = Text(" ".join(p for p in load if p), style=DEVICE_STYLE)
        if (memory := fmt.gpu_memory(gpu)) is not None:
            cells["in_tar"] = Text(memory, style=DEVICE_STYLE, justify="right")
    return tuple(cells[key] for key in COLUMN_KEYS)


def node_cells(node: str, workers: list[WorkerView]) -> Cells:
    """A machine's row on a cluster: its name (under Tar) and the sums over its workers."""
    cells = _sum_cells(workers, NODE_STYLE)
    cells["device"] = Text("node", style=NODE_STYLE)
    cells["tar"] = Text(node, style=NODE_STYLE, no_wrap=True, overflow="ellipsis")
    alive = fmt.workers_alive(workers)
    cells["in_tar"] = Text(f"{alive} alive", style=NODE_STYLE, justify="right")
    return tuple(cells[key] for key in COLUMN_KEYS)


def slot_key(slot: int) -> str:
    return f"slot:{slot}"


def device_key(node: str, device: str) -> str:
    return f"device:{node}/{device}"


def node_key(node: str) -> str:
    return f"node:{node}"


@dataclass(frozen=True)
class Group:
    node: str
    device: str
    workers: list[WorkerView]


def grouped(workers: Iterable[WorkerView]) -> list[Group]:
    """Workers by node, then device (GPUs in index order, then the CPU); slots ascending."""
    ordered = sorted(workers, key=lambda w: (w.node, fmt.device_sort_key(w.device), w.slot))
    return [
        Group(node, device, list(ws))
        for (node, device), ws in groupby(ordered, key=lambda w: (w.node, w.device))
    ]


def table_rows(view: RunView) -> dict[str, Cells]:
    """Every row in display order: node rows only when the run spans several machines."""
    groups = grouped(view.workers)
    several_nodes = len({g.node for g in groups}) > 1
    rows: dict[str, Cells] = {}
    for node, same_node in groupby(groups, key=lambda g: g.node):
        on_node = list(same_node)
        if several_nodes:
            rows[node_key(node)] = node_cells(node, [w for g in on_node for w in g.workers])
        for group in on_node:
            rows[device_key(node, group.device)] = device_cells(view, group)
            for w in group.workers:
                rows[slot_key(w.slot)] = worker_cells(w)
    return rows


def _same(a: Text | str, b: Text | str) -> bool:
    """Equal as displayed; rich's Text equality ignores the base style (the state colour)."""
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain == b.plain and str(a.style) == str(b.style) and a.spans == b.spans
    return a == b


class WorkerTable(DataTable):
    """The workers, updated in place by row key.

    Rows are rebuilt only when the set of rows changes (a slot appears, moves to another
    device or node); otherwise only the cells that changed are written, so the cursor
    stays put.
    """

    BINDINGS: ClassVar[list[BindingType]] = [key.binding() for key in TABLE_KEYS]

    def __init__(self, **kwargs: Unpack[WidgetKeywords]) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._error_width = 40
        self._add_columns()
        self._layout: tuple[str, ...] = ()
        self._cells: dict[str, Cells] = {}
        self._view: RunView | None = None
        self.cells_written = 0
        """Cells written in place since the table was made (rebuilds not counted)."""

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
        rows = table_rows(view)
        layout = tuple(rows)
        if layout != self._layout:
            self._rebuild(rows, selected if selected is not None else self.selected_key())
            self._layout = layout
        else:
            for row_key, cells in rows.items():
                old = self._cells.get(row_key)
                for index, value in enumerate(cells):
                    if old is None or not _same(old[index], value):
                        self.update_cell(row_key, COLUMN_KEYS[index], value)
                        self.cells_written += 1
        self._cells = rows

    def _rebuild(self, rows: dict[str, Cells], selected: str | None) -> None:
        self.clear()
        for row_key, cells in rows.items():
            self.add_row(*cells, key=row_key)
        if selected is not None and selected in rows:
            self.move_cursor(row=self.get_row_index(selected), animate=False)
        else:
            first = next((i for i, key in enumerate(rows) if key.startswith("slot:")), None)
            if first is not None:
                self.move_cursor(row=first, animate=False)  # a worker, not a group row

    def selected_key(self) -> str | None:
        if self.row_count == 0:
            return None
        row_key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return row_key.value

    def selected_slot(self) -> int | None:
        """The slot under the cursor, or None on a device or node row."""
        key = self.selected_key()
        if key is None or not key.startswith("slot:"):
            return None
        return int(key.removeprefix("slot:"))

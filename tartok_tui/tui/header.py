"""The dashboard's header: what runs, overall progress, speed over time, memory, time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from tartok_tui import formatting as fmt
from tartok_tui.supervisor.views import RunView, WorkerState
from tartok_tui.tui.keywords import WidgetKeywords

BAR_WIDTH = 32
BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = BAR_WIDTH) -> Text:
    """The last ``width`` values as block characters scaled to their maximum.

    An interval with no progress at all is drawn red, so a stall stands out.
    """
    shown = list(values)[-width:]
    text = Text()
    peak = max(shown, default=0.0)
    for value in shown:
        if value <= 0 or peak <= 0:
            text.append(BLOCKS[0], style="red")
            continue
        level = min(len(BLOCKS) - 1, round(value / peak * (len(BLOCKS) - 1)))
        text.append(BLOCKS[level], style="cyan")
    return text


def _bar(completed: float, total: float, style: str = "bar.complete") -> ProgressBar:
    return ProgressBar(
        total=max(total, 1), completed=completed, width=BAR_WIDTH, complete_style=style
    )


def _samples_row(view: RunView) -> tuple[ProgressBar | str, Text]:
    if not view.samples_expected:
        # Nothing counted yet: no bar that would pretend to know the total.
        text = Text(f"{view.samples_done:,}  (total not counted yet)")
        bar: ProgressBar | str = ""
    else:
        text = Text(
            f"{view.samples_done:,}/{fmt.samples_total(view)}  "
            f"{100 * fmt.fraction_done(view):5.1f}%"
        )
        if view.samples_expected_is_estimate:
            text.append(" (total estimated)", style="dim")
        bar = _bar(view.samples_done, view.samples_expected)
    text.append(f"  errors {view.errors:,}", style="yellow" if view.errors else "dim")
    text.append(f"   ETA {fmt.eta(view)}", style="bold")
    return bar, text


def _speed_text(view: RunView) -> Text:
    speed = Text()
    speed.append(f"{view.samples_per_second:,.1f}", style="bold cyan")
    speed.append(" samples/s   ")
    speed.append(f"{view.realtime_factor:,.0f}×", style="bold cyan")
    speed.append(" real time")
    if view.throughput:
        shown = view.throughput[-BAR_WIDTH:]
        span = len(shown) * view.throughput_interval_s
        window = f"{span:.0f} s" if span < 120 else f"{span / 60:.0f} min"
        speed.append(
            f"   graph: last {window}, now {shown[-1]:,.0f}×, peak {max(shown):,.0f}×",
            style="dim",
        )
    return speed


def _elapsed_text(view: RunView) -> Text:
    state_style = "bold green" if not view.stopping and not view.finished else "bold yellow"
    text = Text(fmt.duration(view.elapsed))
    text.append("   ")
    text.append(fmt.run_state(view), style=state_style)
    text.append(f"   {fmt.audio_amount(view.audio_seconds)} of audio done")
    text.append(f" ({fmt.audio_hours_per_hour(view):,.0f} h per hour)")
    return text


def _workers_text(view: RunView) -> Text:
    restarts = sum(w.restarts for w in view.workers)
    text = Text(
        f"{fmt.gib(view.memory_bytes)} of {fmt.gib(view.memory_limit_bytes)}   "
        f"workers {fmt.workers_alive(view.workers)}/{len(view.workers)} alive, {restarts} restarts"
    )
    stalled = len(fmt.slots_in(view, WorkerState.STALLED))
    if stalled:
        text.append(f", {stalled} stalled", style="bold red")
    machines = fmt.nodes(view)
    if len(machines) > 1:
        style = "bold red" if view.nodes_alive < len(machines) else ""
        text.append(f"   nodes {view.nodes_alive}/{len(machines)} alive", style=style)
    return text


def render_header(view: RunView, context: str | None = None) -> Group:
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
    grid.add_row("Samples", *_samples_row(view))
    memory_style = "red" if view.memory_bytes > 0.9 * view.memory_limit_bytes else "green"
    grid.add_row(
        "Memory",
        _bar(view.memory_bytes, view.memory_limit_bytes, memory_style),
        _workers_text(view),
    )
    grid.add_row("Speed", sparkline(view.throughput), _speed_text(view))
    grid.add_row("Elapsed", "", _elapsed_text(view))
    if not context:
        return Group(grid)
    # The label column is 8 wide plus 1 of padding: line the context up with the rows.
    line = Text.assemble(("Run", "bold"), " " * 6, context, overflow="ellipsis", no_wrap=True)
    return Group(line, grid)


class RunHeader(Static):
    """What is being run, overall progress, throughput over time, memory and time."""

    def __init__(self, context: str | None = None, **kwargs: Unpack[WidgetKeywords]) -> None:
        super().__init__(**kwargs)
        self.context = context

    def show(self, view: RunView) -> None:
        self.update(render_header(view, self.context))

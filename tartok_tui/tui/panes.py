"""The detail line under the table and the event log."""

from __future__ import annotations

import datetime
from typing import Unpack

from rich.text import Text
from textual.widgets import RichLog, Static

from tartok_tui import formatting as fmt
from tartok_tui.supervisor.views import Event, RunView, WorkerState, WorkerView
from tartok_tui.tui.keywords import WidgetKeywords


def worker_detail(view: RunView, worker: WorkerView) -> Text:
    """The selected worker in full: what the table truncates, its latencies named."""
    text = Text()
    text.append(f"slot {worker.slot}", style="bold")
    node = f"{worker.node} " if len(fmt.nodes(view)) > 1 else ""
    text.append(f"  {node}{worker.device}  pid {worker.pid or '-'}  ")
    if (throttled := fmt.throttle_note(worker, view.now)) is not None:
        text.append(throttled, style=fmt.THROTTLED_STYLE)
        text.append(f" by its store: {worker.throttled}")
    else:
        text.append(worker.state.value, style=fmt.STATE_STYLES.get(worker.state, ""))
    if worker.state == WorkerState.BACKOFF and worker.backoff_until is not None:
        text.append(f" (restart in {max(0.0, worker.backoff_until - view.now):.0f} s)")
    if worker.progress_age_s is not None:
        text.append("  last progress ")
        text.append(f"{fmt.age(worker.progress_age_s)} ago", style=fmt.progress_age_style(worker))
    if worker.samples_done:
        text.append(
            f"  avg latency {worker.avg_latency_ms:,.1f} ms/sample (wall), "
            f"{worker.avg_batch_ms:,.0f} ms/batch (model)"
        )
    text.append(f"  errors {worker.errors:,}  audio {fmt.audio_amount(worker.audio_seconds)}")
    if worker.tar:
        text.append(f"  on {worker.tar}")
    if worker.last_error:
        text.append("  last error: ", style="bold red")
        text.append(worker.last_error, style="red")
    return text


def device_detail(view: RunView, node: str, device: str) -> Text:
    """A device row in full: the GPU's name and readings, its workers."""
    workers = [w for w in view.workers if w.node == node and w.device == device]
    text = Text(device, style="bold")
    if len(fmt.nodes(view)) > 1:
        text.append(f" on {node}")
    gpu = fmt.gpu_for(view, node, device)
    if gpu is not None:
        text.append(f"  {gpu.name}  ")
        text.append("utilisation, memory used/total, power, temperature: " + fmt.gpu_figures(gpu))
    text.append(f"  {len(workers)} workers: slots {', '.join(str(w.slot) for w in workers)}")
    return text


def node_detail(view: RunView, node: str) -> Text:
    workers = [w for w in view.workers if w.node == node]
    alive = fmt.workers_alive(workers)
    gpus = [g for g in view.gpus if g.node == node]
    text = Text(f"node {node}", style="bold")
    text.append(f"  {len(workers)} workers, {alive} alive, {len(gpus)} GPUs")
    return text


class WorkerDetail(Static):
    """The selected row in full: a worker, a device or a node."""

    def show(self, view: RunView, row_key: str | None) -> None:
        kind, _, name = (row_key or "").partition(":")
        if kind == "slot":
            worker = next((w for w in view.workers if w.slot == int(name)), None)
            if worker is not None:
                self.update(worker_detail(view, worker))
                return
        elif kind == "device":
            node, _, device = name.partition("/")
            self.update(device_detail(view, node, device))
            return
        elif kind == "node":
            self.update(node_detail(view, name))
            return
        self.update(Text("select a worker row for its details", style="dim"))


class EventLog(RichLog):
    """Starts, restarts, errors, memory cleanups, recycles: appended as they arrive.

    Snapshots carry the most recent events only, so new ones are found by
    matching the last event already shown.
    """

    def __init__(
        self, *, tz: datetime.tzinfo | None = None, **kwargs: Unpack[WidgetKeywords]
    ) -> None:
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

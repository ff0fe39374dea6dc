"""Headless progress printer for ``tartok-tui run --no-tui``.

Prints every supervisor event as it happens (starts, restarts, errors, the
periodic stats), a progress line at an interval — a rich progress bar on a
terminal, plain lines otherwise (log files, CI), with a line of GPU readings
after each — and a summary at the end.
This module and everything it imports must never import textual.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from tartok_tui import formatting as fmt
from tartok_tui.control import SupervisorControl
from tartok_tui.exit_codes import ExitCode
from tartok_tui.supervisor.views import Event, RunView, WorkerState

EXIT_MEANINGS: dict[int, str] = {
    ExitCode.OK: "all tars done",
    ExitCode.INCOMPLETE: "some tars failed or are unfinished",
    ExitCode.BAD_ARGS: "bad arguments",
    ExitCode.ALL_FATAL: "every worker slot failed",
    ExitCode.OUTPUT_UNAVAILABLE: "the output took no more data; free space and run again to resume",
    ExitCode.CLAIMED: "another run writes these tars; nothing more was committed",
    ExitCode.INTERRUPTED: "interrupted; run the same command again to resume",
}

MAX_FAILED_SHOWN = 20
"""Failed tars named in the summary; run-summary.json and ``status`` have them all."""


def samples_part(view: RunView) -> str:
    """``samples 917,727/~10,000,000 (9.2%, total estimated)``."""
    text = f"samples {view.samples_done:,}"
    if not view.samples_expected:
        return text
    note = ", total estimated" if view.samples_expected_is_estimate else ""
    return f"{text}/{fmt.samples_total(view)} ({100 * fmt.fraction_done(view):.1f}%{note})"


def workers_part(view: RunView) -> str:
    """``workers 7/9 (stalled: slot 3; pending: slots 5, 6; slot 1 throttled (retry in
    40 s))``: the slots to look at, by name."""
    text = f"workers {fmt.workers_alive(view.workers)}/{len(view.workers)}"
    named = [
        f"{state.value}: {fmt.slot_list(slots)}"
        for state in (WorkerState.STALLED, WorkerState.PENDING, WorkerState.BACKOFF)
        if (slots := fmt.slots_in(view, state))
    ]
    named += [
        f"slot {w.slot} {note}"
        for w in view.workers
        if (note := fmt.throttle_note(w, view.now)) is not None
    ]
    return f"{text} ({'; '.join(named)})" if named else text


def gpu_line(view: RunView) -> str | None:
    """Per GPU, after each progress line: ``[1:02:03] gpu | cuda:0 87% 30.1/79.6 GiB 412 W 64C | ...``
    (node-qualified on a cluster); None without GPU readings."""
    if not view.gpus:
        return None
    several_nodes = len(fmt.nodes(view)) > 1
    gpus = sorted(view.gpus, key=lambda g: (g.node, fmt.device_sort_key(g.device)))
    return " | ".join(
        [f"[{fmt.duration(view.elapsed)}] gpu"]
        + [
            f"{g.node + '/' if several_nodes else ''}{g.device} {fmt.gpu_figures(g, degree='C')}"
            for g in gpus
        ]
    )


def progress_line(view: RunView) -> str:
    """The one-line status printed at each interval when not on a terminal."""
    parts = [
        f"[{fmt.duration(view.elapsed)}]",
        f"tars {fmt.tars_complete(view):,}/{view.tars_total:,}"
        + (f" ({view.tars_failed:,} failed)" if view.tars_failed else ""),
        samples_part(view),
        f"{view.samples_per_second:,.1f} samples/s",
        f"{view.realtime_factor:,.0f}x real time",
        f"errors {view.errors:,}",
        workers_part(view),
    ]
    if len(nodes := fmt.nodes(view)) > 1:
        parts.append(f"nodes {view.nodes_alive}/{len(nodes)} alive")
    parts.append(f"mem {fmt.gib(view.memory_bytes)}/{fmt.gib(view.memory_limit_bytes)}")
    parts.append(f"ETA {fmt.eta(view)}")
    if view.stopping and not view.finished:
        parts.append("stopping")
    return " | ".join(parts)


def gpu_average(view: RunView) -> str:
    """For the live bar: mean utilisation and memory over all GPUs."""
    util = [g.utilization_pct for g in view.gpus if g.utilization_pct is not None]
    used = sum(g.memory_used_bytes or 0 for g in view.gpus)
    total = sum(g.memory_total_bytes or 0 for g in view.gpus)
    parts = []
    if util:
        parts.append(f"{sum(util) / len(util):.0f}% avg")
    if total:
        parts.append(f"{used / fmt.GIB:.0f}/{total / fmt.GIB:.0f} GiB")
    return f" · gpu {' '.join(parts)}" if parts else ""


class HeadlessPrinter:
    """Prints events, periodic progress and the final summary to a rich Console.

    ``live``: draw a progress bar that redraws in place (default: when the
    console is a terminal). ``interval``: seconds between progress updates
    (default 0.5 s live, 30 s for plain lines). ``tz``: time zone for event
    times (local time when None).
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        live: bool | None = None,
        interval: float | None = None,
        tz: datetime.tzinfo | None = None,
        next_steps: Sequence[str] = (),
    ) -> None:
        self.console = console if console is not None else Console(highlight=False)
        self.next_steps = tuple(next_steps)
        """Commands the summary suggests once tars are done (status, decode, export)."""
        self.live = self.console.is_terminal if live is None else live
        self.interval = interval if interval is not None else (0.5 if self.live else 30.0)
        self.tz = tz
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    # ------------------------------------------------------------------ events

    def on_event(self, event: Event) -> None:
        """Supervisor callback: print one event line (above the bar when live)."""
        self.console.print(fmt.event_text(event, self.tz), soft_wrap=True)

    # ------------------------------------------------------------------ progress

    def show(self, view: RunView) -> None:
        """Print (plain) or redraw (live) the progress for this snapshot."""
        if self._progress is None or self._task is None:
            self.console.print(progress_line(view), markup=False, soft_wrap=True)
            gpus = gpu_line(view)
            if gpus is not None:
                self.console.print(gpus, markup=False, soft_wrap=True)
            return
        self._progress.update(
            self._task,
            completed=fmt.fraction_done(view) * 1000,
            tars=f"{fmt.tars_complete(view):,}/{view.tars_total:,}",
            samples=fmt.count(view.samples_done)
            + (f"/{fmt.samples_total(view)}" if view.samples_expected else ""),
            rate=f"{view.samples_per_second:,.1f}/s {view.realtime_factor:,.0f}×rt",
            workers=workers_part(view).removeprefix("workers "),
            memory=f"{view.memory_bytes / fmt.GIB:.1f}/{view.memory_limit_bytes / fmt.GIB:.0f} GiB"
            + gpu_average(view),
            elapsed=fmt.duration(view.elapsed),
            eta=fmt.eta(view),
        )
        self._progress.refresh()

    @contextlib.contextmanager
    def bar(self) -> Iterator[None]:
        """While inside, ``show`` redraws a progress bar (when live)."""
        if not self.live:
            yield
            return
        progress = Progress(
            TextColumn("[bold]tars[/] {task.fields[tars]}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("samples {task.fields[samples]} · {task.fields[rate]}"),
            TextColumn("workers {task.fields[workers]} · mem {task.fields[memory]}"),
            TextColumn("{task.fields[elapsed]} · ETA {task.fields[eta]}"),
            console=self.console,
            auto_refresh=False,
        )
        fields: dict[str, Any] = dict.fromkeys(
            ("tars", "samples", "rate", "workers", "memory", "elapsed", "eta"), ""
        )
        self._task = progress.add_task("run", total=1000, **fields)
        self._progress = progress
        try:
            with progress:
                yield
        finally:
            self._progress = None
            self._task = None

    async def watch(self, supervisor: SupervisorControl) -> None:
        """Show progress every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            self.show(supervisor.snapshot())

    # ------------------------------------------------------------------ summary

    def summary(self, view: RunView, exit_code: int, result: object = None) -> None:
        """Final report: totals, throughput, slots and tars that failed, the exit code's meaning.

        ``result``: what ``run()`` returned; the real RunSummary lists tars with
        their status, so failed ones are named with their reason.
        """
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        left = view.tars_total - fmt.tars_complete(view) - view.tars_failed
        table.add_row(
            "tars",
            f"{view.tars_done:,} done, {view.tars_skipped:,} already done, "
            f"{view.tars_failed:,} failed, {max(0, left):,} left, of {view.tars_total:,}",
        )
        table.add_row(
            "samples",
            f"{view.samples_done:,} processed, {view.errors:,} of them error records, "
            f"{fmt.audio_amount(view.audio_seconds)} of audio",
        )
        table.add_row(
            "time",
            f"{fmt.duration(view.elapsed)} · {view.samples_per_second:,.1f} samples/s · "
            f"{view.realtime_factor:,.0f}× real time",
        )
        restarts = sum(w.restarts for w in view.workers)
        table.add_row("workers", f"{len(view.workers)} slots, {restarts} restarts")
        for w in view.workers:
            if w.state == WorkerState.FATAL:
                table.add_row(
                    "",
                    Text(f"slot {w.slot} ({w.device}) gave up: {w.last_error or '?'}", style="red"),
                )
        failed = [t for t in getattr(result, "tars", ()) if getattr(t, "status", None) == "failed"]
        for t in failed[:MAX_FAILED_SHOWN]:
            table.add_row("", Text(f"{t.tar} failed: {t.reason or '?'}", style="red"))
        if len(failed) > MAX_FAILED_SHOWN:
            table.add_row(
                "", Text(f"… and {len(failed) - MAX_FAILED_SHOWN} more failed tars", style="red")
            )
        meaning = EXIT_MEANINGS.get(exit_code, "unknown")
        style = "bold green" if exit_code == ExitCode.OK else "bold red"
        self.console.print(Text(f"Run finished: {meaning} (exit code {exit_code})", style=style))
        self.console.print(table)
        if self.next_steps and view.tars_done + view.tars_skipped > 0:
            self.console.print("next:")
            for command in self.next_steps:
                self.console.print(Text(f"  {command}", style="cyan"), soft_wrap=True)


async def run_headless(
    supervisor: SupervisorControl,
    printer: HeadlessPrinter,
    *,
    handle_signals: bool = True,
) -> int:
    """Run the supervisor to the end with the printer watching; returns the exit code.

    The first Ctrl+C (or SIGTERM) asks the supervisor to stop; a second one
    kills the workers. Either way committed tars stay done and running the same
    command again resumes.
    """
    remove_handlers: Callable[[], None] | None = None
    if handle_signals:
        from tartok_tui.supervisor.signals import install_signal_handlers

        remove_handlers = install_signal_handlers(supervisor)
    try:
        with printer.bar():
            if printer.live:
                printer.show(supervisor.snapshot())  # draw the bar at once; plain lines wait
            watcher = asyncio.create_task(printer.watch(supervisor))
            try:
                result = await supervisor.run()
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            if printer.live:
                printer.show(supervisor.snapshot())  # the bar's final state stays on screen
    finally:
        if remove_handlers is not None:
            remove_handlers()
    printer.summary(supervisor.snapshot(), result.exit_code, result)
    return result.exit_code

"""The live dashboard: a view over supervisor snapshots plus its control methods.

The app runs ``supervisor.run()`` as a worker in its own event loop, reads a
fresh ``RunView`` a few times a second and calls the control methods on keys.
It never reaches into the supervisor's state.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.screen import ModalScreen
from textual.widgets import Footer

from tartok_tui.control import RunResult, SupervisorControl, fire
from tartok_tui.exit_codes import ExitCode
from tartok_tui.formatting import IN_PLAY_STATES
from tartok_tui.supervisor.views import RunView
from tartok_tui.tui.actions import DASHBOARD_KEYS, RUN_ACTIONS
from tartok_tui.tui.header import RunHeader
from tartok_tui.tui.log_pane import WorkerLogPane
from tartok_tui.tui.panes import EventLog, WorkerDetail
from tartok_tui.tui.screens import ConfirmScreen, HelpScreen, help_rows
from tartok_tui.tui.table import WorkerTable

REFRESH_HZ = 3.0


class TartokApp(App[int]):
    """The dashboard. ``clock`` names screenshots; ``tz`` formats event times
    (local time when None); both are injectable so tests are deterministic.
    ``log_path_for``: a worker slot's log file, for the log pane (none without it)."""

    CSS_PATH = Path(__file__).with_name("dashboard.tcss")  # absolute: subclasses live elsewhere
    TITLE = "tartok-tui"
    ENABLE_COMMAND_PALETTE = False  # every action has its own key; keep the footer for them

    BINDINGS: ClassVar[list[BindingType]] = [key.binding() for key in DASHBOARD_KEYS]

    def __init__(
        self,
        supervisor: SupervisorControl,
        *,
        clock: Callable[[], float] = time.time,
        tz: datetime.tzinfo | None = None,
        screenshot_dir: Path | None = None,
        refresh_hz: float = REFRESH_HZ,
        handle_signals: bool = False,
        context: str | None = None,
        log_path_for: Callable[[int], Path] | None = None,
        log_poll_s: float = 0.5,
    ) -> None:
        super().__init__()
        self.log_path_for = log_path_for
        self.log_poll_s = log_poll_s
        self.supervisor = supervisor
        self.clock = clock
        self.tz = tz
        self.screenshot_dir = screenshot_dir if screenshot_dir is not None else Path.cwd()
        self.refresh_hz = refresh_hz
        self.handle_signals = handle_signals
        self.context = context
        self._remove_signal_handlers: Callable[[], None] | None = None
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.stop_requested = False
        self.view: RunView | None = None

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        # Kept as attributes: while a modal screen is up, query_one() would search
        # the modal instead of the dashboard, and the refresh timer keeps running.
        self.header = RunHeader(self.context, id="header")
        self.table = WorkerTable(id="workers")
        self.detail = WorkerDetail(id="detail")
        self.event_log = EventLog(id="events", tz=self.tz)
        self.worker_log = WorkerLogPane(id="worker-log", poll_s=self.log_poll_s)
        self.worker_log.display = False
        yield self.header
        yield self.table
        yield self.detail
        yield self.event_log
        yield self.worker_log
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The dashboard's keys are off while a modal screen (help, a question) is up."""
        return not (isinstance(self.screen, ModalScreen) and action in RUN_ACTIONS)

    def on_mount(self) -> None:
        if self.handle_signals:
            # SIGTERM (kill, a batch system) stops the run cleanly as q does; the
            # terminal is in raw mode, so Ctrl+C arrives as a key, not as SIGINT.
            from tartok_tui.supervisor.signals import install_signal_handlers

            self._remove_signal_handlers = install_signal_handlers(self.supervisor)
        self.refresh_view()
        self.set_interval(1.0 / self.refresh_hz, self.refresh_view)
        self.run_worker(self._run_supervisor(), name="supervisor", exit_on_error=False)

    async def _run_supervisor(self) -> None:
        try:
            self.result = await self.supervisor.run()
        except Exception as exc:  # shown after the terminal is restored, see run_dashboard
            self.error = exc
            self.exit(ExitCode.INCOMPLETE, return_code=ExitCode.INCOMPLETE)
            return
        self.refresh_view()
        self.exit(self.result.exit_code, return_code=self.result.exit_code)

    def on_unmount(self) -> None:
        if self._remove_signal_handlers is not None:
            self._remove_signal_handlers()

    def refresh_view(self) -> None:
        """Read a snapshot and update every pane; unchanged cells are not touched."""
        view = self.supervisor.snapshot()
        if view is self.view:
            return
        self.view = view
        with self.batch_update():
            self.header.show(view)
            self.table.show(view)
            self.detail.show(view, self.table.selected_key())
            self.event_log.show(view.events)

    def on_data_table_row_highlighted(self, _event: WorkerTable.RowHighlighted) -> None:
        if self.view is not None:
            self.detail.show(self.view, self.table.selected_key())
        if self.worker_log.display:
            self._follow_selected_log()

    # ------------------------------------------------------------------ actions

    def _call(self, method: str, *args: Any) -> None:
        fire(getattr(self.supervisor, method)(*args))

    def action_control(self, method: str) -> None:
        """Apply pause/resume/stop/kill/restart to the worker under the cursor."""
        slot = self.table.selected_slot()
        if slot is None:
            self.notify("Select a worker row first (↑ ↓).", severity="warning")
            return
        self._call(method, slot)
        self.notify(f"slot {slot}: {method} requested")
        self.refresh_view()

    def action_pause_all(self) -> None:
        self._call("pause_all")
        self.notify("pausing all workers")
        self.refresh_view()

    def action_resume_all(self) -> None:
        self._call("resume_all")
        self.notify("resuming all workers")
        self.refresh_view()

    def action_toggle_log(self) -> None:
        """Show (or hide) the selected worker's log file under the event log."""
        if self.worker_log.display:
            self.worker_log.display = False
            return
        if self.log_path_for is None:
            self.notify(
                "This dashboard was not told where the worker logs are.", severity="warning"
            )
            return
        if self.table.selected_slot() is None and self.worker_log.tail is None:
            self.notify("Select a worker row first (↑ ↓).", severity="warning")
            return
        self.worker_log.display = True
        self._follow_selected_log()

    def _follow_selected_log(self) -> None:
        slot = self.table.selected_slot()
        if slot is not None and self.log_path_for is not None:
            self.worker_log.follow(slot, self.log_path_for(slot))
            # Show it now rather than at the next tick.
            self.run_worker(self.worker_log.poll(), group="log")

    def action_help(self) -> None:
        bindings = [active.binding for active in self.screen.active_bindings.values()]
        self.push_screen(HelpScreen(help_rows(bindings, self.get_key_display)))

    def action_screenshot(self, filename: str | None = None, path: str | None = None) -> None:
        """Save an SVG of the dashboard (default: tartok-tui-<time>.svg in screenshot_dir)."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.clock()))
        try:
            saved = self.save_screenshot(
                filename=filename or f"tartok-tui-{stamp}.svg",
                path=path or str(self.screenshot_dir),
            )
        except OSError as exc:  # an unwritable directory must not end the run
            self.notify(f"screenshot not saved: {exc}", severity="error")
            return
        self.notify(f"screenshot saved: {saved}")

    async def action_quit(self) -> None:
        """Quit cleanly: ask, request a stop, and leave when the run has ended."""
        if self.result is not None or self.error is not None:
            code = self.result.exit_code if self.result else ExitCode.INCOMPLETE
            self.exit(code, return_code=code)
            return
        view = self.supervisor.snapshot()
        # A stop may also have come from SIGTERM; a second request would force it.
        if self.stop_requested or view.stopping:
            self.push_screen(
                ConfirmScreen(
                    "Already stopping. Kill the workers now? Committed tars stay done; "
                    "the others are redone when you run the same command again.",
                    yes="Kill",
                    no="Keep waiting",
                ),
                self._force_stop,
            )
            return
        if any(w.state in IN_PLAY_STATES for w in view.workers):
            self.push_screen(
                ConfirmScreen(
                    "Stop the run? Committed tars stay done; tars in progress are redone "
                    "when you run the same command again.",
                    yes="Stop",
                    no="Keep running",
                ),
                self._stop,
            )
        else:
            self._stop(True)

    def _stop(self, confirmed: bool | None) -> None:
        if not confirmed:
            return
        self.stop_requested = True
        self._call("request_stop")
        self.notify(
            "Stopping; the dashboard closes when the workers have exited. q again kills them."
        )

    def _force_stop(self, confirmed: bool | None) -> None:
        if confirmed:
            self._call("request_stop", True)
            self.notify("Killing workers.")


def run_dashboard(
    supervisor: SupervisorControl,
    *,
    console: Console | None = None,
    context: str | None = None,
    log_path_for: Callable[[int], Path] | None = None,
    next_steps: Sequence[str] = (),
) -> int:
    """Show the dashboard until the run ends; print the summary; return the exit code.

    ``context``: one line saying what runs (input, output, model), shown on top.
    ``log_path_for``: a slot's worker log file, for the log pane (key l).
    ``next_steps``: commands the summary suggests (see ``HeadlessPrinter``).
    """
    from tartok_tui.progress import HeadlessPrinter

    app = TartokApp(supervisor, handle_signals=True, context=context, log_path_for=log_path_for)
    code = app.run()
    if app.error is not None:
        raise app.error
    if code is None:  # the app ended without the run ending (e.g. the terminal went away)
        code = ExitCode.INTERRUPTED
    printer = HeadlessPrinter(console, live=False, next_steps=next_steps)
    printer.summary(supervisor.snapshot(), code, app.result)
    return code

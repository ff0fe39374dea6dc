"""Run a configured tokenization to the end, with the dashboard or the headless printer.

Used by ``tartok-tui run`` and ``tartok-tui demo``. The dashboard is imported only when it
is shown, so a headless run never loads textual.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from tartok_tui.config import ConfigError, RunConfig
from tartok_tui.control import SupervisorControl
from tartok_tui.exit_codes import ExitCode
from tartok_tui.supervisor.views import Event

if TYPE_CHECKING:
    from tartok_tui.supervisor.preflight import ValidatedRun

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, the message shown as written (never as markup)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}")


def print_waiting(message: str) -> None:
    """A line on stderr while validation waits (a throttled store's retries)."""
    err_console.print(f"[yellow]{escape(message)}[/]")


def make_supervisor(
    config: RunConfig,
    on_event: Callable[[Event], None] | None,
    validated: ValidatedRun | None = None,
) -> SupervisorControl:
    """The real supervisor, given what validation found; tests replace this with a fake."""
    from tartok_tui.supervisor.supervisor import Supervisor

    tars = validated.tars if validated is not None else None
    ignored = validated.ignored if validated is not None else ()
    launcher = None
    if config.ray_address is not None:
        from tartok_tui.supervisor.ray_launcher import RayLauncher

        launcher = RayLauncher(model_source=config.model_dir)
    supervisor = Supervisor(
        config, tars=tars, on_event=on_event, launcher=launcher, ignored=ignored
    )
    if launcher is not None:
        launcher.bind(supervisor.report)
    return supervisor


def validate_config(config: RunConfig) -> tuple[RunConfig, ValidatedRun | None]:
    """Check the whole config before any worker starts; raises ConfigError.

    Returns the config to run and what validation found. A Hugging Face repo id is
    downloaded (or found in the cache) here, and the config returned names the local
    directory, so the run resolves neither the model nor the tar list again. On a Ray
    cluster the repo id is kept: each node fetches it into its own cache.
    """
    from tartok_tui.supervisor.preflight import validate

    validated = validate(config, report=print_waiting)
    if config.ray_address is not None:
        return config, validated
    return replace(config, model_dir=str(validated.model_dir)), validated


def run_pipeline(
    config: RunConfig,
    tui: bool,
    *,
    progress_interval: float | None = None,
    console: Console | None = None,
) -> int:
    """Validate, then run to the end; returns the process exit code (see ``ExitCode``)."""
    console = console if console is not None else Console(highlight=False)
    try:
        if config.ray_address is not None:
            from tartok_tui.supervisor.ray_cluster import connect

            connect(config.ray_address)
        config, validated = validate_config(config)
    except ConfigError as exc:
        from tartok_tui.storage import redact_text

        message = redact_text(str(exc), config.storage_options)
        print_error(message)
        _leave_cluster(config)
        # An output that refuses the write check exits 4, like one that fills up later.
        return int(getattr(exc, "exit_code", ExitCode.BAD_ARGS))
    try:
        return _run_validated(config, validated, tui, progress_interval, console)
    finally:
        # Leaving ends this run's Ray job: Ray ends every actor it started, pending or not.
        _leave_cluster(config)


def _leave_cluster(config: RunConfig) -> None:
    if config.ray_address is not None:
        from tartok_tui.supervisor.ray_cluster import disconnect

        disconnect()


def _run_validated(
    config: RunConfig,
    validated: ValidatedRun | None,
    tui: bool,
    progress_interval: float | None,
    console: Console,
) -> int:
    if tui and not (sys.stdin.isatty() and sys.stdout.isatty()):
        err_console.print(
            "[yellow]not a terminal: showing plain progress instead of the dashboard[/]"
        )
        tui = False
    if tui:
        from tartok_tui.storage import redact_location
        from tartok_tui.tui.app import run_dashboard

        context = (
            f"{redact_location(config.input_dir)} → {redact_location(config.output_dir)}"
            f"   model {config.model_dir}"
        )
        return run_dashboard(
            make_supervisor(config, None, validated),
            console=console,
            context=context,
            log_path_for=config.worker_log_path,
        )

    from tartok_tui.progress import HeadlessPrinter, run_headless

    printer = HeadlessPrinter(console, interval=progress_interval)
    supervisor = make_supervisor(config, printer.on_event, validated)
    return asyncio.run(run_headless(supervisor, printer))

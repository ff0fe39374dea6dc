"""Run a configured tokenization to the end, with the dashboard or the headless printer.

Used by ``tartok-tui run`` and ``tartok-tui demo``. The dashboard is imported only when it
is shown, so a headless run never loads textual.
"""

from __future__ import annotations

import asyncio
import shlex
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
    from tartok_tui.output.claim import OutputClaim
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
    claim = validated.claim if validated is not None else None
    supervisor = Supervisor(
        config, tars=tars, on_event=on_event, launcher=launcher, ignored=ignored, claim=claim
    )
    if launcher is not None:
        launcher.bind(supervisor.report)
    return supervisor


def validate_config(config: RunConfig) -> tuple[RunConfig, ValidatedRun | None]:
    """Check the whole config before any worker starts, then claim the run's tars in the
    output; raises ConfigError, or ClaimRefused while another run writes them.

    Returns the config to run and what validation found (with the claim, which the caller
    releases). A Hugging Face repo id is downloaded (or found in the cache) here, and the
    config returned names the local directory, so the run resolves neither the model nor
    the tar list again. On a Ray cluster the repo id is kept: each node fetches it into its
    own cache.
    """
    from tartok_tui.supervisor.preflight import claim_tars, validate

    validated = validate(config, report=print_waiting)
    validated = replace(validated, claim=claim_tars(config, validated.tars, print_waiting))
    if config.ray_address is not None:
        return config, validated
    return replace(config, model_dir=str(validated.model_dir)), validated


def next_steps(config: RunConfig) -> list[str]:
    """What to run on the output once tars are done: check it, listen to a few samples,
    make training data of it (the model as the user named it, not the resolved cache path)."""
    from tartok_tui.storage import is_url, redact_location

    out = redact_location(config.output_dir)
    dest = f"{out.rstrip('/')}-hf"
    listen = "listen" if is_url(config.output_dir) else f"{out.rstrip('/')}-listen"
    q = shlex.quote
    return [
        f"tartok-tui status {q(out)}",
        f"tartok-tui decode {q(out)} --model-dir {q(str(config.model_dir))} --to {q(listen)} --count 5",
        f"tartok-tui export {q(out)} --format hf --to {q(dest)}",
    ]


def run_pipeline(
    config: RunConfig,
    tui: bool,
    *,
    progress_interval: float | None = None,
    console: Console | None = None,
) -> int:
    """Validate, then run to the end; returns the process exit code (see ``ExitCode``)."""
    from tartok_tui.output.claim import ClaimRefused
    from tartok_tui.storage import redact_text

    console = console if console is not None else Console(highlight=False)
    steps = next_steps(config)
    try:
        if config.ray_address is not None:
            from tartok_tui.supervisor.ray_cluster import connect

            connect(config.ray_address)
        config, validated = validate_config(config)
    except (ConfigError, ClaimRefused) as exc:
        print_error(redact_text(str(exc), config.storage_options))
        _leave_cluster(config)
        if isinstance(exc, ClaimRefused):
            return ExitCode.CLAIMED
        # An output that refuses the write check exits 4, like one that fills up later.
        return int(getattr(exc, "exit_code", ExitCode.BAD_ARGS))
    try:
        return _run_validated(config, validated, tui, progress_interval, console, steps)
    finally:
        # Every ending the process lives through releases the claim (a kill -9 leaves it
        # to the next run's gone-holder rule).
        if validated is not None and validated.claim is not None:
            _release(validated.claim)
        # Leaving ends this run's Ray job: Ray ends every actor it started, pending or not.
        _leave_cluster(config)


def _release(claim: OutputClaim) -> None:
    try:
        warning = claim.release()
    except OSError as exc:
        warning = f"could not remove the claim on the output (the next run takes it over): {exc}"
    if warning is not None:
        err_console.print(f"[yellow]{escape(warning)}[/]")


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
    steps: list[str],
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
            next_steps=steps,
        )

    from tartok_tui.progress import HeadlessPrinter, run_headless

    printer = HeadlessPrinter(console, interval=progress_interval, next_steps=steps)
    supervisor = make_supervisor(config, printer.on_event, validated)
    return asyncio.run(run_headless(supervisor, printer))

"""``tartok-tui export`` for people: progress, the summary, and the exit code."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from tartok_tui.config import ConfigError
from tartok_tui.exit_codes import ExitCode
from tartok_tui.output.committed import TokensFile
from tartok_tui.output.target import OutputUnavailable
from tartok_tui.run import print_error
from tartok_tui.storage import Access, Location, redact_location, redact_text

MAX_LISTED = 20


@contextmanager
def unit_progress(console: Console) -> Iterator[Callable[[int, int, TokensFile], None] | None]:
    """A bar over the units on a terminal; nothing otherwise (the summary says it all)."""
    if not console.is_terminal:
        yield None
        return
    columns = (TextColumn("export"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}"))  # fmt: skip
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("", total=None)

        def on_unit(i: int, n: int, file: TokensFile) -> None:
            progress.update(task, completed=i, total=n, description=str(file.key))

        yield on_unit


def export_command(
    source: Location,
    dest: Location,
    format_name: str,
    split_by: str | None,
    access: Access,
    spool_dir: Path | None,
    console: Console,
) -> int:
    """Run the export, print what happened; the process exit code."""
    from tartok_tui.export.run import run_export

    try:
        with unit_progress(console) as on_unit:
            result = run_export(
                source,
                dest,
                format_name,
                split_by=split_by,
                access=access,
                spool_dir=spool_dir,
                on_unit=on_unit,
            )
    except ConfigError as exc:
        print_error(redact_text(str(exc), access.options))
        return ExitCode.BAD_ARGS
    except OutputUnavailable as exc:
        print_error(f"{redact_text(str(exc), access.options)}; free space and run the same command")
        return ExitCode.OUTPUT_UNAVAILABLE
    except KeyboardInterrupt:
        print_error("interrupted: exported units are kept; run the same command to go on")
        return ExitCode.INTERRUPTED
    for line in result.warnings:
        console.print(Text(f"warning: {line}", style="yellow"))
    if result.both_formats:
        console.print(Text(f"warning: {len(result.both_formats)} tars have tokens in both "
                           "formats (the JSONL file was exported; keep one)", style="yellow"))  # fmt: skip
    rate = result.bytes_read / 1e9 / (result.seconds / 60) if result.seconds > 0 else 0.0
    console.print(
        f"{format_name}: {result.exported:,} of {result.units:,} tokens files exported "
        f"({result.samples:,} samples, {result.bytes_read / 1e6:,.1f} MB read in "
        f"{result.seconds:,.1f} s, {rate:,.2f} GB/min), {result.already:,} already done"
        + (
            f"; {result.skipped_samples:,} samples without text skipped"
            if result.skipped_samples
            else ""
        )
    )
    for key, why in result.failed[:MAX_LISTED]:
        console.print(Text(f"{key} not exported: {redact_text(why, access.options)}", style="red"))
    if result.failed:
        again = "run the same command to retry them (the final files wait until all are done)"
        console.print(Text(f"{len(result.failed)} tokens files not exported; {again}", style="red"))
        return ExitCode.INCOMPLETE
    console.print(f"done: {redact_location(dest)}")
    return ExitCode.OK

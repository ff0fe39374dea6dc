"""``status`` and ``verify`` for people: a progress bar while tars are read, then the
verdict, the totals and the tars that need a look (``--json`` prints the reports' dicts)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from tartok_tui.formatting import count, size

if TYPE_CHECKING:
    from tartok_tui.output.parallel import Progress
    from tartok_tui.output.scan import OutputStatus
    from tartok_tui.output.verify import VerifyReport


@contextlib.contextmanager
def progress_bar(label: str, shown: bool) -> Iterator[Progress | None]:
    """A progress bar on stderr while tars are read (none when ``shown`` is False: with
    --json, or when stderr is not a terminal, so that output stays machine-readable)."""
    if not shown:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Bar(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


MAX_LISTED = 20
"""Tars listed by name in human-readable output; --json has them all."""


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" … and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _made_by(manifest: dict | None) -> Text:
    """The manifest in one line: codec, weights, precision, fingerprint."""
    if manifest is None:
        return Text("no manifest (written by an older version, or no run yet)", style="dim")
    if "unreadable" in manifest:
        return Text(f"manifest unreadable: {manifest['unreadable']}", style="red")
    return Text(
        f"{manifest.get('codec')}, weights {str(manifest.get('weights', ''))[:12]}, "
        f"{manifest.get('precision')}, audio {','.join(manifest.get('token_options', {}).get('audio_exts', []))}"
        f" (fingerprint {manifest.get('fingerprint')}, tartok-tui {manifest.get('tool_version')})"
    )


def _writers_rows(grid: Table, result: OutputStatus) -> None:
    """Who writes here now (claims), and tars written under another fingerprint."""
    for claim in result.claims:
        grid.add_row("claimed by", Text(claim.describe(), style="yellow" if claim.gone else ""))
    if result.other_fingerprints:
        grid.add_row(
            "mixed tokens",
            Text(f"{_names(result.other_fingerprints)}: made by another model or precision "
                 "than the manifest's", style="bold red"),
        )  # fmt: skip


def print_status(result: OutputStatus, console: Console) -> None:
    """``status`` for people: counts, then the tars that need a look."""
    from tartok_tui.storage import redact_location

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("output", redact_location(result.output_dir))
    grid.add_row("tokens by", _made_by(result.manifest))
    formats = ", ".join(f"{n:,} {name}" for name, n in result.formats.items())
    grid.add_row(
        "done",
        f"{result.tars_done:,} tars" + (f" ({formats})" if formats else "")
        + f", {size(result.tokens_bytes)} of tokens",
    )  # fmt: skip
    if result.counted:
        grid.add_row(
            "records", f"{count(result.lines)} lines, {count(result.error_records)} error records"
        )
    else:
        grid.add_row(
            "records", Text("not counted (--counts reads each tar's commit record)", style="dim")
        )
    if result.records < result.tars_done:
        grid.add_row(
            "commit records",
            Text(f"{result.tars_done - result.records:,} of {result.tars_done:,} done tars have none "
                 "(committed by an older version: verify scans their inputs)", style="dim"),
        )  # fmt: skip
    summary = result.summary or {}
    failed = [t["tar"] for t in summary.get("tars", []) if t.get("status") == "failed"]
    unfinished = [t["tar"] for t in summary.get("tars", []) if t.get("status") == "unfinished"]
    if summary:
        grid.add_row(
            "last run",
            f"exit code {summary.get('exit_code', '?')}: {summary.get('exit_reason', '?')}",
        )
    grid.add_row(
        "partial",
        Text(_names(result.partial_tars), style="yellow")
        if result.partial_tars
        else Text("none", style="dim"),
    )
    if not summary:
        # Failures are known from the last run's summary only; output files never say so.
        grid.add_row("failed", Text("unknown (no run-summary.json yet)", style="dim"))
    elif failed:
        grid.add_row("failed", Text(_names(failed), style="red"))
    else:
        grid.add_row("failed", Text("none", style="dim"))
    if unfinished:
        grid.add_row("unfinished", _names(unfinished))
    if result.journals:
        grid.add_row("isolated", Text(_names(result.journals), style="yellow"))
    if result.orphan_errors:
        grid.add_row("orphan errors", Text(_names(result.orphan_errors), style="red"))
    if result.stale_partial:
        grid.add_row(
            "stale partial", f"{len(result.stale_partial)} leftover files (safe to delete)"
        )
    _writers_rows(grid, result)
    with_errors = result.with_errors
    if with_errors and not result.counted:
        grid.add_row("with errors", Text(_names([t.tar for t in with_errors]), style="yellow"))
        console.print(grid)
        return
    if result.unreadable:
        grid.add_row("unreadable", Text(_names([t.tar for t in result.unreadable]), style="red"))
    console.print(grid)
    if with_errors:
        table = Table(title=f"Tars with error records ({len(with_errors)})", title_justify="left")
        table.add_column("tar", no_wrap=True)
        table.add_column("lines", justify="right")
        table.add_column("sample errors", justify="right")
        table.add_column("tar errors", justify="right")
        for t in with_errors[:MAX_LISTED]:
            table.add_row(t.tar, count(t.lines), count(t.errors), count(t.tar_errors))
        console.print(table)


def _inputs_read(report: VerifyReport) -> str:
    """What verify read of the inputs: a listing, and the headers of how many tars."""
    if report.deep:
        text = f"all {report.scanned:,} scanned again (--deep)"
    elif report.scanned:
        text = (
            f"listed; {report.scanned:,} without a commit record scanned "
            "(committed by an older version), the rest from their records"
        )
    else:
        text = "listed only: keys, sizes and ETags or mtimes from each tar's commit record"
    if report.streamed:
        text += f"; {report.streamed:,} compressed, read through whole"
    if report.reader_keys:
        text += (
            f"; {report.reader_keys:,} records hold the keys their worker read from the store "
            "(no separate scan: --deep checks them against the input)"
        )
    return text


def print_verify(report: VerifyReport, console: Console) -> None:
    """``verify`` for people: the verdict, the totals, then one row per tar with a problem."""
    data = report.to_dict()
    verdict = Text("OK: every sample accounted for exactly once", style="bold green")
    if not report.ok:
        verdict = Text("PROBLEMS FOUND", style="bold red")
    console.print(verdict)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("tars", f"{data['tars']:,} checked, {len(report.missing_tars):,} without output")
    grid.add_row("inputs", _inputs_read(report))
    uncounted = (
        f" (and those of {report.uncounted:,} tars without output)" if report.uncounted else ""
    )
    grid.add_row(
        "samples",
        f"{data['samples_expected']:,} in the input{uncounted}; {data['lines']:,} lines + "
        f"{data['error_records']:,} error records in the output",
    )
    grid.add_row(
        "problems",
        f"{report.lost_samples:,} lost, {report.duplicate_keys:,} duplicated, "
        f"{report.unknown_keys:,} unknown keys",
    )
    if report.changed_inputs:
        grid.add_row("changed inputs", Text(_names(report.changed_inputs), style="red"))
    if report.mixed_tars:
        grid.add_row(
            "mixed tokens",
            Text(f"{_names(report.mixed_tars)}: made by another model or precision than "
                 "the output's manifest", style="bold red"),
        )  # fmt: skip
    if report.modified_inputs:
        grid.add_row(
            "modified inputs",
            Text(f"{_names(report.modified_inputs)} (ETag or mtime only: same size and keys)",
                 style="yellow"),
        )  # fmt: skip
    if report.damaged_inputs:
        grid.add_row("damaged inputs", _names(report.damaged_inputs))
    console.print(grid)
    bad = [t for t in report.tars if not t.ok]
    if not bad:
        return
    table = Table(title=f"Tars with problems ({len(bad)})", title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("tar", "left"),
        ("expected", "right"),
        ("lines", "right"),
        ("errors", "right"),
        ("lost", "right"),
        ("dup", "right"),
        ("unknown", "right"),
        ("note", "left"),
    )
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for t in bad[:MAX_LISTED]:
        table.add_row(
            t.tar,
            f"{t.expected:,}",
            f"{t.lines:,}",
            f"{t.error_records + t.tar_errors:,}",
            f"{t.lost:,}",
            f"{len(t.duplicate_keys):,}",
            f"{len(t.unknown_keys):,}",
            "; ".join(t.notes()),
        )
    console.print(table)

"""Command line: ``tartok-tui run | status | verify``.

Every option of ``run`` is a ``RunConfig`` field, spelled in kebab case; the old
script's underscore spellings work too, and each option can be set from the
environment as ``TARTOK_<OPTION>`` (e.g. ``TARTOK_NUM_PROC=8``). The dashboard is
imported only when it is shown, so ``--no-tui`` never loads textual.
"""

from __future__ import annotations

import asyncio
import enum
import json
import sys
from collections.abc import Callable
from dataclasses import MISSING, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tartok_tui import __version__
from tartok_tui.config import DEFAULT_AUDIO_EXTS, ConfigError, RunConfig
from tartok_tui.control import SupervisorControl
from tartok_tui.exit_codes import ExitCode
from tartok_tui.supervisor.views import Event

if TYPE_CHECKING:
    from tartok_tui.output.scan import OutputStatus, VerifyReport

EXAMPLES = """\
[bold]Examples[/]

  [dim]# try it first: a small generated dataset and a tiny random model, with the dashboard[/]
  tartok-tui demo

  [dim]# tokenize every tar of Emilia/EN on all visible GPUs, two workers per GPU[/]
  tartok-tui run -i /data/Emilia/EN -o /data/tokens/EN -m SparkAudio/Spark-TTS-0.5B

  [dim]# the old script's spellings still work; tars 0..99 only, plain progress lines[/]
  tartok-tui run --input_dir in --output_dir out --model_dir ./Spark-TTS-0.5B --to_index 100 --no-tui

  [dim]# what is done, and is every sample accounted for?[/]
  tartok-tui status /data/tokens/EN
  tartok-tui verify /data/Emilia/EN /data/tokens/EN

[bold]Exit codes[/]  0 all tars done · 1 some tars failed or unfinished · 2 bad arguments · 3 every worker failed · 130 interrupted (run again to resume)

Every [cyan]run[/] option can also be set in the environment as TARTOK_<OPTION>, e.g. TARTOK_NUM_PROC=8.
"""

app = typer.Typer(
    name="tartok-tui",
    help="Tokenize tar-sharded speech datasets into Spark-TTS BiCodec tokens on many GPUs, with a live dashboard.",
    epilog=EXAMPLES,
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

err_console = Console(stderr=True, highlight=False)


class Precision(enum.StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


def _default(name: str) -> Any:
    """The RunConfig default, so the CLI and the config cannot drift apart."""
    field = next(f for f in fields(RunConfig) if f.name == name)
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        return field.default_factory()
    raise KeyError(f"RunConfig.{name} has no default")


DEFAULT_PRECISION = Precision(_default("precision"))


def _opt(name: str, help: str, *short: str, **kwargs: Any) -> Any:
    """A ``run`` option: ``--kebab-name``, the ``--snake_name`` alias, ``TARTOK_NAME``."""
    decls = [f"--{name.replace('_', '-')}"]
    if "_" in name:
        decls.append(f"--{name}")
    # Square brackets are rich markup in help text; "[default: ...]" must show as written.
    return typer.Option(
        *decls, *short, help=help.replace("[", r"\["), envvar=f"TARTOK_{name.upper()}", **kwargs
    )


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tartok-tui {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Tokenize tar-sharded speech datasets into Spark-TTS BiCodec tokens on many GPUs, with a live dashboard."""


# --------------------------------------------------------------------------- run


def make_supervisor(
    config: RunConfig,
    on_event: Callable[[Event], None] | None,
    tars: list[Path] | None = None,
) -> SupervisorControl:
    """The real supervisor, given the tars validation found; tests replace this with a fake."""
    from tartok_tui.supervisor.supervisor import Supervisor

    return Supervisor(config, tars=tars, on_event=on_event)


def validate_config(config: RunConfig) -> tuple[RunConfig, list[Path] | None]:
    """Check the whole config before any worker starts; raises ConfigError.

    Returns the config to run and the tars found. A Hugging Face repo id is downloaded (or
    found in the cache) here, and the config returned names the local directory, so the
    run resolves neither the model nor the tar list again.
    """
    from tartok_tui.supervisor.preflight import validate

    validated = validate(config)
    return replace(config, model_dir=str(validated.model_dir)), validated.tars


def run_pipeline(
    config: RunConfig,
    tui: bool,
    *,
    progress_interval: float | None = None,
    console: Console | None = None,
) -> int:
    """Validate, then run to the end with the dashboard or the headless printer.

    Returns the process exit code (see ``ExitCode``). Reusable by any command
    that builds a RunConfig (``demo`` does).
    """
    console = console if console is not None else Console(highlight=False)
    try:
        config, tars = validate_config(config)
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        return ExitCode.BAD_ARGS
    if tui and not (sys.stdin.isatty() and sys.stdout.isatty()):
        err_console.print(
            "[yellow]not a terminal: showing plain progress instead of the dashboard[/]"
        )
        tui = False
    if tui:
        # Imported here so that the headless path never loads textual.
        from tartok_tui.tui.app import run_dashboard

        context = f"{config.input_dir} → {config.output_dir}   model {config.model_dir}"
        return run_dashboard(make_supervisor(config, None, tars), console=console, context=context)

    from tartok_tui.progress import HeadlessPrinter, run_headless

    printer = HeadlessPrinter(console, interval=progress_interval)
    supervisor = make_supervisor(config, printer.on_event, tars)
    return asyncio.run(run_headless(supervisor, printer))


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--worker-env")
        env[key] = value
    return env


def _parse_exts(value: str) -> tuple[str, ...]:
    exts = tuple(e.strip().lstrip(".").lower() for e in value.split(",") if e.strip())
    if not exts:
        raise typer.BadParameter("give at least one extension", param_hint="--audio-exts")
    return exts


@app.command(epilog=EXAMPLES)
def run(
    input_dir: Annotated[Path, _opt("input_dir", "Directory holding the input .tar shards.", "-i")],
    output_dir: Annotated[
        Path, _opt("output_dir", "Where the per-tar JSONL files go; a rerun resumes here.", "-o")
    ],
    model_dir: Annotated[
        str,
        _opt(
            "model_dir",
            "Spark-TTS model: a local directory in the official layout, or a Hugging Face repo id.",
            "-m",
        ),
    ],
    from_index: Annotated[
        int, _opt("from_index", "First tar (index in the sorted list).", min=0)
    ] = _default("from_index"),
    to_index: Annotated[
        int | None,
        _opt("to_index", "End of the tar range, exclusive [default: the last tar].", min=0),
    ] = None,
    recursive: Annotated[
        bool, _opt("recursive", "Look for tars in subdirectories too.")
    ] = _default("recursive"),
    num_proc: Annotated[
        int | None,
        _opt(
            "num_proc",
            "Worker processes in all [default: procs-per-gpu per GPU, or 1 without a GPU].",
            "-n",
            min=1,
        ),
    ] = None,
    procs_per_gpu: Annotated[
        int, _opt("procs_per_gpu", "Workers per GPU when --num-proc is not given.", min=1)
    ] = _default("procs_per_gpu"),
    device: Annotated[
        str, _opt("device", "auto | cpu | cuda | cuda:0,1 (the GPUs to use).", "-d")
    ] = _default("device"),
    precision: Annotated[
        Precision, _opt("precision", "Model precision; bf16/fp16 are faster but not bit-identical.")
    ] = DEFAULT_PRECISION,
    batch_seconds: Annotated[
        float, _opt("batch_seconds", "Audio seconds per model batch, padding included.", min=1.0)
    ] = _default("batch_seconds"),
    max_duration: Annotated[
        float,
        _opt("max_duration", "Clips longer than this many seconds get an error record.", min=0.1),
    ] = _default("max_duration"),
    audio_exts: Annotated[
        str, _opt("audio_exts", "Audio member extensions, comma separated.")
    ] = ",".join(DEFAULT_AUDIO_EXTS),
    memory_limit_gb: Annotated[
        float,
        _opt(
            "memory_limit_gb",
            "Total worker memory (GB) before workers are cleaned up or recycled.",
            min=0.1,
        ),
    ] = _default("memory_limit_gb"),
    memory_check_s: Annotated[
        float, _opt("memory_check_s", "Seconds between memory checks.", min=0.1)
    ] = _default("memory_check_s"),
    stats_every: Annotated[
        int, _opt("stats_every", "Log throughput stats every N samples.", min=1)
    ] = _default("stats_every"),
    threads_per_worker: Annotated[
        int | None,
        _opt(
            "threads_per_worker",
            "Torch threads per worker [default: CPU cores shared among CPU workers].",
            min=1,
        ),
    ] = None,
    decode_workers: Annotated[
        int | None,
        _opt(
            "decode_workers",
            "Audio decode threads per worker [default: from the worker's cores].",
            min=1,
        ),
    ] = None,
    streams: Annotated[
        int | None,
        _opt(
            "streams",
            "Batches each worker runs at once, sharing its threads "
            "[default: one per thread on the CPU, 1 on a GPU].",
            min=1,
        ),
    ] = None,
    backoff_initial_s: Annotated[
        float, _opt("backoff_initial_s", "First restart delay after a worker dies.", min=0.0)
    ] = _default("backoff_initial_s"),
    backoff_max_s: Annotated[
        float, _opt("backoff_max_s", "Longest restart delay.", min=0.0)
    ] = _default("backoff_max_s"),
    crash_window_s: Annotated[
        float,
        _opt(
            "crash_window_s",
            "Window (s) in which --crash-limit failures make a slot fatal.",
            min=0.0,
        ),
    ] = _default("crash_window_s"),
    crash_limit: Annotated[
        int, _opt("crash_limit", "Failures within --crash-window-s before a slot gives up.", min=1)
    ] = _default("crash_limit"),
    poison_threshold: Annotated[
        int,
        _opt(
            "poison_threshold",
            "A tar that killed this many workers is re-run sample by sample.",
            min=1,
        ),
    ] = _default("poison_threshold"),
    stop_timeout_s: Annotated[
        float,
        _opt(
            "stop_timeout_s", "After a stop request, workers alive this long are killed.", min=0.0
        ),
    ] = _default("stop_timeout_s"),
    log_dir: Annotated[
        Path | None, _opt("log_dir", "Worker logs [default: OUTPUT_DIR/logs].")
    ] = None,
    worker_env: Annotated[
        list[str] | None,
        typer.Option(
            "--worker-env",
            "--extra-worker-env",
            "--extra_worker_env",
            help="Extra environment for the workers, KEY=VALUE; repeatable.",
            envvar="TARTOK_EXTRA_WORKER_ENV",
        ),
    ] = None,
    no_tui: Annotated[
        bool,
        typer.Option(
            "--no-tui",
            "--no_tui",
            help="Plain progress output instead of the dashboard (never loads textual).",
            envvar="TARTOK_NO_TUI",
        ),
    ] = False,
    progress_interval: Annotated[
        float | None,
        typer.Option(
            "--progress-interval",
            "--progress_interval",
            help=r"Seconds between --no-tui progress lines \[default: 0.5 on a terminal, 30 otherwise].",
            envvar="TARTOK_PROGRESS_INTERVAL",
            min=0.1,
        ),
    ] = None,
) -> None:
    """Tokenize every tar in INPUT_DIR (or a slice of them) into OUTPUT_DIR.

    Tars already complete in OUTPUT_DIR are skipped, so running the same command again resumes.
    """
    config = RunConfig(
        input_dir=input_dir,
        output_dir=output_dir,
        model_dir=model_dir,
        from_index=from_index,
        to_index=to_index,
        recursive=recursive,
        num_proc=num_proc,
        procs_per_gpu=procs_per_gpu,
        device=device,
        precision=precision.value,
        batch_seconds=batch_seconds,
        max_duration=max_duration,
        audio_exts=_parse_exts(audio_exts),
        memory_limit_gb=memory_limit_gb,
        memory_check_s=memory_check_s,
        stats_every=stats_every,
        threads_per_worker=threads_per_worker,
        decode_workers=decode_workers,
        streams=streams,
        backoff_initial_s=backoff_initial_s,
        backoff_max_s=backoff_max_s,
        crash_window_s=crash_window_s,
        crash_limit=crash_limit,
        poison_threshold=poison_threshold,
        stop_timeout_s=stop_timeout_s,
        log_dir=log_dir,
        worker_env=_parse_env(worker_env or []),
    )
    raise typer.Exit(run_pipeline(config, tui=not no_tui, progress_interval=progress_interval))


# --------------------------------------------------------------------------- status / verify


@app.command()
def status(
    output_dir: Annotated[
        Path, typer.Argument(help="The output directory of a run.", exists=True, file_okay=False)
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """What is done, partial or failed in OUTPUT_DIR, from its files alone (no input needed)."""
    from tartok_tui.output.scan import scan_output

    result = scan_output(output_dir)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    print_status(result, Console(highlight=False))


@app.command()
def verify(
    input_dir: Annotated[
        Path, typer.Argument(help="The input directory of the run.", exists=True, file_okay=False)
    ],
    output_dir: Annotated[
        Path, typer.Argument(help="Its output directory.", exists=True, file_okay=False)
    ],
    from_index: Annotated[
        int, _opt("from_index", "First tar of the range that was run.", min=0)
    ] = 0,
    to_index: Annotated[
        int | None, _opt("to_index", "End of that range, exclusive.", min=0)
    ] = None,
    recursive: Annotated[bool, _opt("recursive", "Tars in subdirectories too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check that every sample of every input tar appears exactly once in the output, as tokens or an error record.

    Exits 1 when a sample is lost or duplicated, an output line is unreadable, or a tar has no output.
    """
    from tartok_tui.output.scan import verify as verify_output
    from tartok_tui.shards.discover import InputError

    try:
        report = verify_output(input_dir, output_dir, from_index, to_index, recursive)
    except InputError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(ExitCode.BAD_ARGS) from exc
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print_verify(report, Console(highlight=False))
    raise typer.Exit(ExitCode.OK if report.ok else ExitCode.INCOMPLETE)


MAX_LISTED = 20
"""Tars listed by name in human-readable output; --json has them all."""


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" … and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def print_status(result: OutputStatus, console: Console) -> None:
    """``status`` for people: counts, then the tars that need a look."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("output", str(result.output_dir))
    grid.add_row(
        "done",
        f"{result.tars_done:,} tars, {result.lines:,} lines, {result.error_records:,} error records",
    )
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
    console.print(grid)
    with_errors = result.with_errors
    if with_errors:
        table = Table(title=f"Tars with error records ({len(with_errors)})", title_justify="left")
        table.add_column("tar", no_wrap=True)
        table.add_column("lines", justify="right")
        table.add_column("sample errors", justify="right")
        table.add_column("tar errors", justify="right")
        for t in with_errors[:MAX_LISTED]:
            table.add_row(t.tar, f"{t.lines:,}", f"{t.errors:,}", f"{t.tar_errors:,}")
        console.print(table)


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
    grid.add_row(
        "samples",
        f"{data['samples_expected']:,} in the input; {data['lines']:,} lines + "
        f"{data['error_records']:,} error records in the output",
    )
    grid.add_row(
        "problems",
        f"{report.lost_samples:,} lost, {report.duplicate_keys:,} duplicated, "
        f"{report.unknown_keys:,} unknown keys",
    )
    if report.damaged_inputs:
        grid.add_row("damaged inputs", _names(report.damaged_inputs))
    console.print(grid)
    bad = [t for t in report.tars if not t.ok]
    if not bad:
        return
    table = Table(title=f"Tars with problems ({len(bad)})", title_justify="left")
    table.add_column("tar", no_wrap=True)
    for name, justify in (
        ("tar", "left"),
        ("expected", "right"),
        ("lines", "right"),
        ("errors", "right"),
        ("lost", "right"),
        ("dup", "right"),
        ("unknown", "right"),
        ("note", "left"),
    ):
        table.add_column(name, justify=justify)
    for t in bad[:MAX_LISTED]:
        notes = []
        if t.output_missing:
            notes.append("no output")
        if t.corrupt_lines:
            notes.append(f"{t.corrupt_lines} unreadable lines")
        if t.damage_unrecorded:
            notes.append(f"input damaged ({t.input_damage}) but not recorded")
        examples = (t.lost_keys or t.duplicate_keys or t.unknown_keys)[:2]
        if examples:
            notes.append("e.g. " + ", ".join(examples))
        table.add_row(
            t.tar,
            f"{t.expected:,}",
            f"{t.lines:,}",
            f"{t.error_records + t.tar_errors:,}",
            f"{t.lost:,}",
            f"{len(t.duplicate_keys):,}",
            f"{len(t.unknown_keys):,}",
            "; ".join(notes),
        )
    console.print(table)


@app.command()
def demo(
    no_tui: Annotated[
        bool, typer.Option("--no-tui", help="Plain progress lines instead of the dashboard.")
    ] = False,
    tars: Annotated[int, typer.Option("--tars", min=1, help="Tars in the demo dataset.")] = 6,
    samples_per_tar: Annotated[
        int, typer.Option("--samples-per-tar", min=1, help="Samples in each demo tar.")
    ] = 24,
    num_proc: Annotated[
        int | None, typer.Option("--num-proc", "-n", min=1, help="Worker processes.")
    ] = 2,
    device: Annotated[
        str, typer.Option("--device", "-d", help="auto | cpu | cuda | cuda:0,1.")
    ] = "auto",
    demo_dir: Annotated[
        Path | None,
        typer.Option(
            "--demo-dir",
            envvar="TARTOK_DEMO_DIR",
            help=r"Where the demo data lives \[default: ~/.cache/tartok-tui/demo].",
        ),
    ] = None,
    keep_output: Annotated[
        bool,
        typer.Option("--keep-output", help="Keep the previous demo output: shows resume."),
    ] = False,
) -> None:
    """Run the real pipeline on a small generated Emilia-style dataset and a tiny random-weight model."""
    from tartok_tui.demo import run_demo

    code = run_demo(
        root=demo_dir,
        tars=tars,
        samples_per_tar=samples_per_tar,
        num_proc=num_proc,
        device=device,
        tui=not no_tui,
        keep_output=keep_output,
        console=Console(highlight=False),
    )
    raise typer.Exit(code)


def main() -> None:
    app()

"""Command line: ``tartok-tui run | status | verify | export | decode | demo``.

Every option of ``run`` is a ``RunConfig`` field, spelled in kebab case; the old
script's underscore spellings work too, and each option can be set from the
environment as ``TARTOK_<OPTION>`` (e.g. ``TARTOK_NUM_PROC=8``). The dashboard is
imported only when it is shown, so ``--no-tui`` never loads textual.
"""

from __future__ import annotations

import inspect
import json
import sys
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from tartok_tui import __version__
from tartok_tui.cli_args import (
    STORAGE_OPTIONS_HELP,
    access_for,
    existing_location,
    storage_failed,
)
from tartok_tui.cli_tokens import decode, export
from tartok_tui.config import (
    CliSpec,
    ConfigError,
    DisplayOptions,
    RunConfig,
    parse_location,
)
from tartok_tui.exit_codes import SHORT, ExitCode
from tartok_tui.run import print_error, run_pipeline

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

  [dim]# tars streamed from S3 (or gs://, hf://datasets/...), tokens uploaded to S3[/]
  tartok-tui run -i s3://corpus/Emilia/EN -o s3://corpus/tokens/EN -m SparkAudio/Spark-TTS-0.5B

  [dim]# training data from the tokens, and a few clips decoded back to listen to[/]
  tartok-tui export /data/tokens/EN --format hf --to /data/hf/EN
  tartok-tui decode /data/tokens/EN -m SparkAudio/Spark-TTS-0.5B --to listen/ --count 5

[bold]Exit codes[/]  {exit_codes}

Every [cyan]run[/] option can also be set in the environment as TARTOK_<OPTION>, e.g. TARTOK_NUM_PROC=8.
""".format(exit_codes=" · ".join(f"{int(code)} {text}" for code, text in SHORT.items()))

app = typer.Typer(
    name="tartok-tui",
    help="Tokenize tar-sharded speech datasets into Spark-TTS BiCodec tokens on many GPUs, with a live dashboard.",
    epilog=EXAMPLES,
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
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


# --------------------------------------------------------------------------- options


def _declared(cls: type, names: Iterable[str] | None = None) -> list[tuple[str, Any, CliSpec, Any]]:
    """(name, field type, CLI spec, default) of a config dataclass's declared options."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        spec = f.metadata.get("cli")
        if spec is None or (names is not None and f.name not in names):
            continue
        if spec.required:
            default = ...
        elif f.default is MISSING or spec.cli_type is not None:
            # Not given on the command line: the dataclass's own default applies.
            default = None
        else:
            default = f.default
        out.append((f.name, hints[f.name], spec, default))
    return out


def _parameter(name: str, kind: Any, spec: CliSpec, default: Any) -> inspect.Parameter:
    """A Typer option for a declared field: --kebab, --snake, short names, TARTOK_NAME."""
    decls = [f"--{name.replace('_', '-')}"]
    if "_" in name:
        decls.append(f"--{name}")
    decls += [*spec.aliases, *spec.short]
    text = spec.help
    if spec.default_text is not None:
        text += f" [default: {spec.default_text}]"
    extra: dict[str, Any] = {}
    if spec.min is not None:
        extra["min"] = spec.min
    if spec.default_text is not None:
        extra["show_default"] = False
    # Square brackets are rich markup in help text; "[default: ...]" must show as written.
    opt = typer.Option(
        default, *decls, help=text.replace("[", r"\["), envvar=f"TARTOK_{name.upper()}", **extra
    )
    annotation = spec.cli_type if spec.cli_type is not None else kind
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=annotation
    )


def _build_config(cls: type, values: dict[str, Any]) -> Any:
    """The config dataclass from parsed command-line values (ConfigError on bad values)."""
    kwargs = {}
    for name, _, spec, _ in _declared(cls):
        if name not in values:
            continue
        value = values[name]
        if value is None:
            continue  # not given: the dataclass default
        if spec.parse is not None:
            value = spec.parse(value)
        kwargs[name] = value
    return cls(**kwargs)


def declared_command(impl: Callable[..., None], *classes: type) -> Callable[..., None]:
    """A Typer command whose options are the declared fields of ``classes``."""
    return with_signature(impl, [_parameter(*d) for cls in classes for d in _declared(cls)])


def with_signature(
    impl: Callable[..., None], params: list[inspect.Parameter]
) -> Callable[..., None]:
    """``impl`` as a Typer command taking exactly ``params``."""

    def command(**values: Any) -> None:
        impl(**values)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = impl.__doc__
    command.__name__ = impl.__name__
    return command


# --------------------------------------------------------------------------- run


def run(**values: Any) -> None:
    """Tokenize every tar in INPUT_DIR (or a slice of them) into OUTPUT_DIR.

    Tars already complete in OUTPUT_DIR are skipped, so running the same command again resumes.
    """
    try:
        display: DisplayOptions = _build_config(
            DisplayOptions, {k: values.pop(k) for k in DISPLAY_OPTIONS}
        )
        config: RunConfig = _build_config(RunConfig, values)
    except ConfigError as exc:
        print_error(str(exc))
        raise typer.Exit(ExitCode.BAD_ARGS) from exc
    code = run_pipeline(config, tui=not display.no_tui, progress_interval=display.progress_interval)
    raise typer.Exit(code)


DISPLAY_OPTIONS = [f.name for f in fields(DisplayOptions)]
app.command(name="run", epilog=EXAMPLES)(declared_command(run, RunConfig, DisplayOptions))


# --------------------------------------------------------------------------- status / verify


JOBS_HELP = "Tars read at once (threads)."


@app.command()
def status(
    output_dir: Annotated[
        str,
        typer.Argument(help="The output directory (or URL) of a run.", callback=existing_location),
    ],
    counts: Annotated[
        bool,
        typer.Option(
            "--counts",
            help="Also count records and error records per tar (reads each tar's commit "
            "record and errors file; without it, one listing and nothing per tar).",
        ),
    ] = False,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help=JOBS_HELP)] = 16,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    storage_options: Annotated[
        str | None,
        typer.Option(
            "--storage-options", envvar="TARTOK_STORAGE_OPTIONS", help=STORAGE_OPTIONS_HELP
        ),
    ] = None,
) -> None:
    """What is done, partial or failed in OUTPUT_DIR, from one listing of its files (no input needed)."""
    from tartok_tui.check_report import print_status, progress_bar
    from tartok_tui.output.scan import scan_output
    from tartok_tui.storage import StorageError

    access = access_for(storage_options)
    try:
        with progress_bar("counting", counts and not as_json and sys.stderr.isatty()) as bar:
            result = scan_output(
                parse_location(output_dir), access, counts=counts, jobs=jobs, progress=bar
            )
    except (OSError, StorageError) as exc:
        raise storage_failed(exc, access) from exc
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    print_status(result, Console(highlight=False))


def verify(
    ctx: typer.Context,
    input_dir: str,
    output_dir: str,
    as_json: bool = False,
    deep: bool = False,
    jobs: int = 16,
    **values: Any,
) -> None:
    """Check that every sample of every input tar appears exactly once in the output, as tokens or an error record.

    Reads the output and one listing of the input (each tar's recorded keys, size and
    ETag or mtime); --deep reads every input tar's headers again. Exits 1 when a sample is
    lost or duplicated, an output line is unreadable, an input changed, or a tar has no output.
    """
    from tartok_tui.check_report import print_verify, progress_bar
    from tartok_tui.output.verify import verify as verify_output
    from tartok_tui.shards.discover import InputError, no_tars_message
    from tartok_tui.storage import StorageError, redact_text

    from_index, to_index, recursive = values["from_index"], values["to_index"], values["recursive"]
    access = access_for(values.get("storage_options"))
    try:
        with progress_bar("verifying", not as_json and sys.stderr.isatty()) as bar:
            report = verify_output(
                parse_location(input_dir),
                parse_location(output_dir),
                from_index,
                to_index,
                recursive,
                access=access,
                deep=deep,
                jobs=jobs,
                progress=bar,
            )
    except InputError as exc:
        message = redact_text(str(exc), access.options)
        print_error(message)
        raise typer.Exit(ExitCode.BAD_ARGS) from exc
    except (OSError, StorageError) as exc:
        raise storage_failed(exc, access) from exc
    if not report.tars:
        what = no_tars_message(input_dir, from_index, to_index, recursive)
        print_error(what)
        raise typer.Exit(ExitCode.BAD_ARGS)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        console = Console(highlight=False)
        console.print(
            _range_text(ctx, from_index, to_index, recursive, len(report.tars)), soft_wrap=True
        )
        print_verify(report, console)
    raise typer.Exit(ExitCode.OK if report.ok else ExitCode.INCOMPLETE)


def _range_text(
    ctx: typer.Context, from_index: int, to_index: int | None, recursive: bool, found: int
) -> Text:
    """Which tars verify checked, and where a narrowed range came from (a TARTOK_* variable
    exported for ``run`` narrows ``verify`` too, which should never go unnoticed)."""
    from_env = [
        f"TARTOK_{name.upper()}"
        for name in ("from_index", "to_index", "recursive")
        if getattr(ctx.get_parameter_source(name), "name", None) == "ENVIRONMENT"
    ]
    end = "the end" if to_index is None else str(to_index)
    text = f"range: tars [{from_index}, {end}) of the sorted list, {found:,} in range"
    text += ", subdirectories included" if recursive else ""
    if from_env:
        text += f" (set by {', '.join(from_env)} in the environment)"
    return Text(text, style="yellow" if from_env else "dim")


def _location_argument(name: str, help: str) -> inspect.Parameter:
    return inspect.Parameter(
        name,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        annotation=str,
        default=typer.Argument(..., help=help, callback=existing_location),
    )


_verify_params = [
    inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
    _location_argument("input_dir", "The input directory (or URL) of the run."),
    _location_argument("output_dir", "Its output directory (or URL)."),
    *(
        _parameter(*d)
        for d in _declared(RunConfig, ("from_index", "to_index", "recursive", "storage_options"))
    ),
    inspect.Parameter(
        "as_json",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=bool,
        default=typer.Option(False, "--json", help="Machine-readable output."),
    ),
    inspect.Parameter(
        "deep",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=bool,
        default=typer.Option(
            False,
            "--deep",
            help="Scan every input tar's member headers again (on object storage by ranged "
            "requests, a few KiB per sample): finds an input whose content changed while its "
            "size stayed the same.",
        ),
    ),
    inspect.Parameter(
        "jobs",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=int,
        default=typer.Option(16, "--jobs", min=1, help=JOBS_HELP),
    ),
]
app.command(name="verify")(with_signature(verify, _verify_params))


# --------------------------------------------------------------------------- export / decode

app.command()(export)
app.command()(decode)


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
    from tartok_tui.demo.run import run_demo

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

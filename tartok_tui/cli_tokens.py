"""The commands that read a run's committed tokens: ``export`` and ``decode``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tartok_tui.cli_args import (
    MODEL_DIR_HELP,
    STORAGE_OPTIONS_HELP,
    access_for,
    existing_location,
    storage_failed,
)
from tartok_tui.config import ConfigError, parse_location
from tartok_tui.exit_codes import ExitCode
from tartok_tui.export import ExportFormatName, SplitBy
from tartok_tui.run import print_error


def _output_argument() -> Any:
    return typer.Argument(
        help="The output directory (or URL) of a run.", callback=existing_location
    )


def export(
    output_dir: Annotated[str, _output_argument()],
    format_name: Annotated[
        ExportFormatName,
        typer.Option(
            "--format",
            "-f",
            help="hf: a Hugging Face dataset folder (Parquet shards, dataset card); memmap: "
            "uint16 token files with an index, for trainers that map them; spark-tts: "
            "Spark-TTS's LLM training lines.",
        ),
    ],
    to: Annotated[
        str,
        typer.Option(
            "--to", help="Where the export goes (a directory or URL); a rerun resumes there."
        ),
    ],
    split_by: Annotated[
        SplitBy | None,
        typer.Option("--split-by", help="hf: shards and a config per language."),
    ] = None,
    storage_options: Annotated[
        str | None,
        typer.Option(
            "--storage-options", envvar="TARTOK_STORAGE_OPTIONS", help=STORAGE_OPTIONS_HELP
        ),
    ] = None,
    spool_dir: Annotated[
        Path | None,
        typer.Option("--spool-dir", help="With a --to URL: where files are built before upload."),
    ] = None,
) -> None:
    """Export the committed tokens of OUTPUT_DIR as training data, one unit per tokens file.

    Exactly once and resumable like run: a rerun skips what is exported and redoes the rest.
    """
    from tartok_tui.export.command import export_command
    from tartok_tui.storage import StorageError

    access = access_for(storage_options)
    try:
        code = export_command(
            parse_location(output_dir),
            _location(to),
            str(format_name),
            None if split_by is None else str(split_by),
            access,
            spool_dir,
            Console(highlight=False),
        )
    except StorageError as exc:
        raise storage_failed(exc, access) from exc
    raise typer.Exit(code)


def decode(
    output_dir: Annotated[str, _output_argument()],
    model_dir: Annotated[
        str, typer.Option("--model-dir", "-m", envvar="TARTOK_MODEL_DIR", help=MODEL_DIR_HELP)
    ],
    to: Annotated[str, typer.Option("--to", help="Local folder for the <key>.wav files.")],
    keys: Annotated[
        str | None, typer.Option("--keys", help="Comma-separated sample keys to decode.")
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(
            "--count", min=1, help=r"Without --keys: how many samples to draw \[default: 10]."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random draw.")] = 0,
    device: Annotated[
        str,
        typer.Option("--device", "-d", help="auto (cuda when available) | cpu | cuda | cuda:N."),
    ] = "auto",
    storage_options: Annotated[
        str | None,
        typer.Option(
            "--storage-options", envvar="TARTOK_STORAGE_OPTIONS", help=STORAGE_OPTIONS_HELP
        ),
    ] = None,
) -> None:
    """Turn committed tokens of OUTPUT_DIR back into 16 kHz WAV files with BiCodec's decoder."""
    from tartok_tui.decode.command import decode_command
    from tartok_tui.storage import StorageError, is_url

    if keys is not None and count is not None:
        print_error("--keys and --count: give one (the keys to decode, or how many to draw)")
        raise typer.Exit(ExitCode.BAD_ARGS)
    if is_url(to):
        print_error(f"--to {to}: decode writes to a local folder")
        raise typer.Exit(ExitCode.BAD_ARGS)
    access = access_for(storage_options)
    wanted = [k.strip() for k in keys.split(",") if k.strip()] if keys is not None else None
    try:
        code = decode_command(
            parse_location(output_dir),
            model_dir,
            Path(to),
            keys=wanted,
            count=count if count is not None else 10,
            seed=seed,
            device=device,
            access=access,
            console=Console(highlight=False),
        )
    except StorageError as exc:
        raise storage_failed(exc, access) from exc
    raise typer.Exit(code)


def _location(value: str) -> Any:
    try:
        return parse_location(value)
    except ConfigError as exc:
        print_error(str(exc))
        raise typer.Exit(ExitCode.BAD_ARGS) from exc

"""What several commands take: an output location, --storage-options, and how a storage
failure ends them (exit 2 for a missing backend)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import typer

from tartok_tui.config import ConfigError, RunConfig, parse_json_object
from tartok_tui.exit_codes import ExitCode
from tartok_tui.run import print_error


def existing_location(value: str) -> str:
    """A command argument: a URL as given, or a directory that exists (Typer's check)."""
    from tartok_tui.storage import is_url

    if is_url(value):
        return value
    path = Path(value)
    if not path.exists():
        raise typer.BadParameter(f"Directory '{value}' does not exist.")
    if not path.is_dir():
        raise typer.BadParameter(f"Directory '{value}' is a file.")
    return value


def access_for(storage_options: str | None) -> Any:
    """The storage access for ``--storage-options`` (exits 2 on bad JSON)."""
    from tartok_tui.storage import Access

    try:
        return Access(options=parse_json_object(storage_options))
    except ConfigError as exc:
        print_error(str(exc))
        raise typer.Exit(ExitCode.BAD_ARGS) from exc


def storage_failed(exc: Exception, access: Any) -> typer.Exit:
    """Print why storage could not be used; the exit to raise (2 for a missing backend)."""
    from tartok_tui.storage import StorageError, redact_text

    print_error(redact_text(str(exc), access.options))
    return typer.Exit(ExitCode.BAD_ARGS if isinstance(exc, StorageError) else ExitCode.INCOMPLETE)


STORAGE_OPTIONS_HELP, MODEL_DIR_HELP = (
    next(f.metadata["cli"].help for f in fields(RunConfig) if f.name == name)
    for name in ("storage_options", "model_dir")
)

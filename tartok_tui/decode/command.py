"""``tartok-tui decode`` for people: what was written, what was not, and the exit code."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.text import Text

from tartok_tui.config import ConfigError
from tartok_tui.exit_codes import ExitCode
from tartok_tui.run import print_error
from tartok_tui.storage import Access, Location, redact_text
from tartok_tui.storage.errors import EXHAUSTED_ERRNOS

MAX_LISTED = 20


def decode_command(
    source: Location,
    model_dir: str,
    to: Path,
    *,
    keys: list[str] | None,
    count: int,
    seed: int,
    device: str,
    access: Access,
    console: Console,
) -> int:
    """Decode, print what happened; the process exit code."""
    from tartok_tui.decode.run import run_decode

    started = time.monotonic()
    try:
        result = run_decode(
            source,
            model_dir,
            to,
            keys=keys,
            count=count,
            seed=seed,
            device=device,
            access=access,
            on_clip=lambda path: console.print(f"wrote {path}", highlight=False),
        )
    except ConfigError as exc:
        print_error(redact_text(str(exc), access.options))
        return ExitCode.BAD_ARGS
    except OSError as exc:
        if exc.errno not in EXHAUSTED_ERRNOS:
            raise
        print_error(f"{to} takes no more: {exc}")
        return ExitCode.OUTPUT_UNAVAILABLE
    except KeyboardInterrupt:
        print_error("interrupted: the files written so far are whole")
        return ExitCode.INTERRUPTED
    for line in result.warnings:
        console.print(Text(f"warning: {line}", style="yellow"))
    wall = time.monotonic() - started
    speed = result.audio_seconds / result.model_seconds if result.model_seconds > 0 else 0.0
    console.print(
        f"{len(result.written):,} clips, {result.audio_seconds:,.1f} s of audio in {to} "
        f"({wall:,.1f} s in all; the decoder ran at {speed:,.1f}x real time)"
    )
    for key, why in result.failed[:MAX_LISTED]:
        console.print(Text(f"{key} not decoded: {why}", style="red"))
    if result.missing:
        shown = ", ".join(result.missing[:MAX_LISTED])
        console.print(Text(f"not in the output: {shown}", style="red"))
    if not result.ok:
        if not result.written and not (result.failed or result.missing):
            console.print(Text("nothing to decode", style="red"))
        return ExitCode.INCOMPLETE
    return ExitCode.OK

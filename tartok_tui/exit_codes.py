"""Process exit codes of ``tartok-tui run`` (and of ``verify``: 0 ok, 1 problems, 2 bad args)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    """Every tar in the range is done."""
    INCOMPLETE = 1
    """Some tars failed or were left unfinished."""
    BAD_ARGS = 2
    """Bad arguments or configuration; no worker was started."""
    ALL_FATAL = 3
    """Every worker slot gave up (crash loop or model load failure)."""
    OUTPUT_UNAVAILABLE = 4
    """The output took no more (no space, quota exceeded, read-only): the run stopped
    leasing and returned its tars uncommitted. Free space and run the same command."""
    CLAIMED = 5
    """Another run is writing the same tars into the output: refused before any worker
    started; or another run took the output over during this run, which then stopped
    leasing and returned its tars uncommitted. Nothing to redo here: the other run has it."""
    INTERRUPTED = 130
    """Stopped by the user (Ctrl+C / quit / SIGTERM); the run can be resumed."""


SHORT: dict[ExitCode, str] = {
    ExitCode.OK: "all tars done",
    ExitCode.INCOMPLETE: "some tars failed or unfinished",
    ExitCode.BAD_ARGS: "bad arguments",
    ExitCode.ALL_FATAL: "every worker failed",
    ExitCode.OUTPUT_UNAVAILABLE: "the output takes no more (free space, run again)",
    ExitCode.CLAIMED: "another run has it",
    ExitCode.INTERRUPTED: "interrupted (run again to resume)",
}
"""Each code in a few words, for the command's help."""

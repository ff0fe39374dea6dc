"""The run's first steps, before any worker starts: validate, sweep stale partial files,
find the tars already done.

Whatever goes wrong here ends the run with an exit code and a line saying why (``StartFailed``),
never an exception out of the event loop: a bad argument exits 2, an output that refuses
writes exits 4, an output that could not be listed (after the throttling and network
retries) exits 1. A throttled store is waited for, each wait said in the event log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from tartok_tui.config import ConfigError, RunConfig
from tartok_tui.exit_codes import ExitCode
from tartok_tui.output.target import OutputUnavailable
from tartok_tui.storage import Location
from tartok_tui.supervisor.preflight import ValidatedRun, validate
from tartok_tui.supervisor.run_output import RunOutput


class StartFailed(Exception):
    """The run cannot start: ``code`` is its exit code, ``reason`` the line that says why."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Start:
    validated: ValidatedRun
    done: list[Location]
    """Tars complete before this run."""


async def start_run(
    config: RunConfig,
    tars: Sequence[Location] | None,
    output: RunOutput,
    ignored: Sequence[str] = (),
) -> Start:
    """Validate (``tars``: the list an earlier validation found), then see what is done
    and record the manifest (``RunOutput.start``; ``ignored``: shard-like files an earlier
    validation found unread); each retry of the output's write check is a warning in the
    event log."""

    def report(text: str) -> None:
        output.report_soon("warning", text)

    try:
        validated = await asyncio.to_thread(
            validate, config, list(tars) if tars is not None else None, report
        )
        done = await output.start(validated, validated.ignored or ignored)
    except ConfigError as exc:
        raise StartFailed(int(getattr(exc, "exit_code", ExitCode.BAD_ARGS)), str(exc)) from exc
    except OutputUnavailable as exc:
        raise StartFailed(ExitCode.OUTPUT_UNAVAILABLE, f"the output takes no more: {exc}") from exc
    except OSError as exc:
        raise StartFailed(
            ExitCode.INCOMPLETE, f"could not see which tars are done: {exc}; run again"
        ) from exc
    return Start(validated, done)

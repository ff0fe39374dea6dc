"""The run's claim on its tars, kept while workers run: refreshed every ``heartbeat_s``.

The caller (``run.py``) acquires the claim before the supervisor starts and releases it
when the run has ended, however it ended. A claim found lost (another run took the tars
over) stops the run as a full output does: no new lease, tars in progress returned
uncommitted, exit ``CLAIMED``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from tartok_tui.exit_codes import ExitCode
from tartok_tui.output.claim import ClaimLost, OutputClaim


class Reporter(Protocol):
    def report(self, level: str, slot: int | None, message: str) -> None: ...


async def keep_claim(
    claim: OutputClaim, halt: Callable[[int, str], None], reporter: Reporter
) -> None:
    """Refresh ``claim`` until cancelled; ``halt(code, reason)`` the run when it is lost."""
    while True:
        await asyncio.sleep(claim.heartbeat_s)
        try:
            await asyncio.to_thread(claim.heartbeat)
        except ClaimLost as exc:
            halt(
                ExitCode.CLAIMED,
                f"{exc}; this run writes no more (tars in progress are returned uncommitted)",
            )
            return
        except OSError as exc:
            # Not lost yet: the store may answer next time (heartbeat says when it is too late).
            reporter.report("warning", None, f"could not refresh the claim on the output: {exc}")

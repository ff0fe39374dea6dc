"""The supervisor's control surface as the views see it.

The dashboard and the headless printer are written against ``SupervisorControl``
rather than the concrete ``Supervisor`` so they can be driven by a scripted fake
in tests and screenshots. Nothing here imports textual.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from typing import Any, Protocol, runtime_checkable

from tartok_tui.supervisor.views import RunView


class RunResult(Protocol):
    """What ``run()`` returns; only the exit code is relied upon."""

    exit_code: int


@runtime_checkable
class SupervisorControl(Protocol):
    """Read a snapshot, drive the run, control one slot or all of them.

    Control methods may return an awaitable (when the implementation is async);
    callers must await whatever they get back.
    """

    def snapshot(self) -> RunView: ...

    def run(self) -> Awaitable[RunResult]: ...

    def pause(self, slot: int) -> Any: ...

    def resume(self, slot: int) -> Any: ...

    def stop(self, slot: int) -> Any: ...

    def kill(self, slot: int) -> Any: ...

    def restart(self, slot: int) -> Any: ...

    def pause_all(self) -> Any: ...

    def resume_all(self) -> Any: ...

    def request_stop(self, force: bool = False) -> Any: ...


_pending: set[asyncio.Future] = set()


def fire(result: Any) -> None:
    """Let an async control method's result run to completion from sync code.

    A reference is kept until it finishes, because the event loop holds tasks
    only weakly; its exception, if any, is raised into the loop's handler.
    """
    if inspect.isawaitable(result):
        future = asyncio.ensure_future(result)
        _pending.add(future)
        future.add_done_callback(_pending.discard)

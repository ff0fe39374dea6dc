"""SIGINT/SIGTERM for the headless run: a graceful stop first, a forced one on the second."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Protocol


class Stoppable(Protocol):
    def request_stop(self, force: bool = False) -> object: ...


def install_signal_handlers(supervisor: Stoppable) -> Callable[[], None]:
    """Call from inside the running loop; returns a function that removes the handlers."""
    loop = asyncio.get_running_loop()
    count = 0

    def on_signal() -> None:
        nonlocal count
        count += 1
        supervisor.request_stop(force=count > 1)

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            # Not the main thread or not a Unix loop: the caller keeps default handling.
            continue

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return remove

"""Supervisor: worker subprocesses, leases, restarts, memory, and the run's state.

Names are loaded lazily: ``tartok_tui.control`` imports ``supervisor.views``,
and the supervisor imports ``control``; eager imports here would make a cycle.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Supervisor": "tartok_tui.supervisor.supervisor",
    "validate": "tartok_tui.supervisor.supervisor",
    "install_signal_handlers": "tartok_tui.supervisor.supervisor",
    "RunSummary": "tartok_tui.supervisor.summary",
    "ConfigError": "tartok_tui.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

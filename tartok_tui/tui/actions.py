"""Every key of the dashboard, declared once: it feeds the bindings, the footer and the help.

A key's footer label is the binding's description and its help text is the binding's
tooltip; the help screen reads the live bindings, so what it says is what the keys do.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class Key:
    keys: str
    """Textual key names, comma-separated for several keys."""
    action: str
    label: str
    """Short, for the footer."""
    help: str
    """A sentence for the help screen."""
    show: bool = True
    priority: bool = False

    def binding(self) -> Binding:
        return Binding(
            self.keys,
            self.action,
            self.label,
            show=self.show,
            priority=self.priority,
            tooltip=self.help,
        )


DASHBOARD_KEYS: tuple[Key, ...] = (
    Key("p", "control('pause')", "Pause", "pause the selected worker (it takes no new batch)"),
    Key("r", "control('resume')", "Resume", "resume the selected worker"),
    Key("s", "control('stop')", "Stop", "stop the selected worker after its current tar"),
    Key(
        "K",
        "control('kill')",
        "Kill",
        "kill the selected worker now (its tar is leased again; the slot restarts)",
    ),
    Key("R", "control('restart')", "Restart", "restart the selected worker"),
    Key("P", "pause_all", "Pause all", "pause all workers"),
    Key("U", "resume_all", "Resume all", "resume all workers"),
    Key("l", "toggle_log", "Log", "show or hide the selected worker's log file"),
    Key("S", "screenshot", "Screenshot", "save a screenshot (SVG) of the dashboard"),
    Key("question_mark", "help", "Help", "this help"),
    Key(
        "q",
        "quit",
        "Quit",
        "quit: stop the run cleanly (resumable); again while stopping kills the workers",
    ),
    # Ctrl+C must not kill the app mid-tar: it asks like q does.
    Key("ctrl+c", "quit", "Quit", "quit (as q)", show=False, priority=True),
)

TABLE_KEYS: tuple[Key, ...] = (
    Key("up", "cursor_up", "Up", "select the worker above", show=False),
    Key("down", "cursor_down", "Down", "select the worker below", show=False),
)
"""The worker table's own keys (the table's defaults, given their help text)."""

RUN_ACTIONS = frozenset(key.action.partition("(")[0] for key in DASHBOARD_KEYS)
"""The dashboard's actions; none of them fires from under a modal screen (it has its own keys)."""

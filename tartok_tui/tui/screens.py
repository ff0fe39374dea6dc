"""Modal screens: the key help and the yes/no confirmation."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from tartok_tui.formatting import STATE_STYLES

KEYS: tuple[tuple[str, str], ...] = (
    ("↑ ↓", "select a worker"),
    ("p", "pause the selected worker (it takes no new batch)"),
    ("r", "resume the selected worker"),
    ("s", "stop the selected worker after its current tar"),
    ("K", "kill the selected worker now (its tar is leased again; the slot restarts)"),
    ("R", "restart the selected worker"),
    ("P / U", "pause / resume all workers"),
    ("S", "save a screenshot (SVG) of the dashboard"),
    ("q", "quit: stop the run cleanly (resumable); q again while stopping kills the workers"),
    ("?", "this help"),
)


class HelpScreen(ModalScreen[None]):
    """What each key does and what each state colour means."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        keys = Table.grid(padding=(0, 2))
        keys.add_column(style="bold cyan", justify="right")
        keys.add_column()
        for key, meaning in KEYS:
            keys.add_row(key, meaning)
        states = Text("States: ")
        for state, style in STATE_STYLES.items():
            states.append(state.value, style=style)
            states.append("  ")
        with Vertical(id="help-box"):
            yield Static(Text("tartok-tui keys", style="bold"), id="help-title")
            yield Static(keys)
            yield Static(states, id="help-states")
            yield Static(Text("Esc or ? closes this help", style="dim"))

    def action_dismiss(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A question answered with y / n (or the buttons)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.question = question
        self.yes = yes
        self.no = no

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(self.question, id="confirm-question")
            with Horizontal(id="confirm-buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button(f"{self.no} (n)", variant="primary", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

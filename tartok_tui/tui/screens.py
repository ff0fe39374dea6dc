"""Modal screens: the help (built from the live key bindings) and the yes/no question."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from tartok_tui.formatting import (
    PROGRESS_WARN_S,
    STATE_LEGEND,
    THROTTLED,
    THROTTLED_MEANING,
    THROTTLED_STYLE,
)
from tartok_tui.supervisor.views import WorkerState

READING_THE_TABLE: tuple[tuple[str, str], ...] = (
    ("Lat/smp", "average latency per sample: the worker's wall time over its samples"),
    ("detail line", "the selected row in full; per batch: average model time per batch"),
    ("Last prog", f"time since the worker last made progress; yellow past {PROGRESS_WARN_S:.0f} s"),
    ("×RT", "audio seconds per second of model time"),
    ("device rows", "the GPU's utilisation, power, temperature and memory used/total"),
    ("Speed graph", "×real time over the last minutes; red where nothing was done"),
)


def help_rows(
    bindings: Iterable[Binding], key_display: Callable[[Binding], str]
) -> list[tuple[str, str]]:
    """(keys, what they do) per action, from the bindings that carry a help text.

    Keys bound to the same action share a row; rows follow the first shown key of
    each action, so hidden aliases (Ctrl+C for q) do not reorder the help.
    """
    groups: dict[str, list[tuple[int, Binding]]] = {}
    for index, binding in enumerate(bindings):
        if binding.tooltip and not binding.system:
            groups.setdefault(binding.action, []).append((index, binding))

    def position(action: str) -> tuple[int, int]:
        shown = [index for index, b in groups[action] if b.show]
        return (0, shown[0]) if shown else (1, groups[action][0][0])

    rows = []
    for action in sorted(groups, key=position):
        group = sorted((b for _, b in groups[action]), key=lambda b: not b.show)
        keys = " ".join(dict.fromkeys(key_display(b) for b in group))
        rows.append((keys, group[0].tooltip))
    return rows


class HelpScreen(ModalScreen[None]):
    """What each key does (from the bindings), what each state means, how to read the table."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
    ]

    def __init__(self, rows: list[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        keys = Table.grid(padding=(0, 2))
        keys.add_column(style="bold cyan", justify="right")
        keys.add_column()
        for key, meaning in self.rows:
            keys.add_row(key, meaning)
        states = Table.grid(padding=(0, 2))
        states.add_column(justify="right")
        states.add_column()
        for state, (style, meaning) in STATE_LEGEND.items():
            states.add_row(Text(state.value, style=style), meaning)
            if state == WorkerState.RUNNING:
                states.add_row(Text(THROTTLED, style=THROTTLED_STYLE), THROTTLED_MEANING)
        columns = Table.grid(padding=(0, 2))
        columns.add_column(style="bold", justify="right")
        columns.add_column()
        for name, meaning in READING_THE_TABLE:
            columns.add_row(name, meaning)
        with VerticalScroll(id="help-box"):
            yield Static(Text("tartok-tui keys", style="bold"), id="help-first-title")
            yield Static(keys)
            yield Static(Text("Worker states", style="bold"), classes="help-title")
            yield Static(states)
            yield Static(Text("Reading the table", style="bold"), classes="help-title")
            yield Static(columns)
            yield Static(Text("Esc or ? closes this help", style="dim"), id="help-close")


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

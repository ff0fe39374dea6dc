"""The keywords every textual widget takes, for widgets that pass them on to their base."""

from __future__ import annotations

from typing import TypedDict


class WidgetKeywords(TypedDict, total=False):
    """``name``, ``id``, ``classes`` and ``disabled``, as textual's ``Widget`` takes them."""

    name: str | None
    id: str | None
    classes: str | None
    disabled: bool

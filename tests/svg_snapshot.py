"""Compare an SVG screenshot with the committed one under tests/snapshots/.

Regenerate with ``TARTOK_UPDATE_SNAPSHOTS=1 uv run pytest tests/test_tui.py``
after checking that the change is wanted.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from pathlib import Path

SNAPSHOT_DIR = Path(__file__).parent / "snapshots"
UPDATE_ENV = "TARTOK_UPDATE_SNAPSHOTS"

# Rich names the SVG's CSS classes after a hash of the content ("terminal-1234567"),
# and Textual may use other generated ids; neither says anything about what is shown.
_IDS = re.compile(r"terminal-\d+")


def normalise(svg: str) -> str:
    return _IDS.sub("terminal", svg)


def _text_lines(svg: str) -> list[str]:
    """The visible text per row, for a readable diff."""
    rows: dict[str, list[str]] = {}
    for y, text in re.findall(r'<text[^>]* y="([\d.]+)"[^>]*>([^<]*)</text>', svg):
        rows.setdefault(y, []).append(text.replace("&#160;", " "))
    return [
        "".join(parts).rstrip() for _, parts in sorted(rows.items(), key=lambda kv: float(kv[0]))
    ]


def assert_svg_snapshot(name: str, svg: str) -> None:
    """Fail unless ``svg`` matches ``tests/snapshots/<name>.svg`` (ids normalised)."""
    path = SNAPSHOT_DIR / f"{name}.svg"
    actual = normalise(svg)
    if os.environ.get(UPDATE_ENV) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    if not path.exists():
        raise AssertionError(f"no snapshot {path}; create it with {UPDATE_ENV}=1")
    expected = path.read_text(encoding="utf-8")
    if actual == expected:
        return
    fd, failed = tempfile.mkstemp(prefix=f"{name}-", suffix=".svg")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(actual)
    diff = "\n".join(
        difflib.unified_diff(
            _text_lines(expected), _text_lines(actual), "expected", "actual", lineterm="", n=1
        )
    )
    raise AssertionError(
        f"screenshot differs from {path} (actual saved to {failed}; regenerate with {UPDATE_ENV}=1)\n"
        + (diff or "(same text; styles differ)")
    )


async def settled_screenshot(app, pilot, tries: int = 40) -> str:
    """The app's screenshot once the screen stops changing between two idle points: on a
    loaded machine the footer and a resized table may be drawn a few frames late."""
    previous = None
    for _ in range(tries):
        await pilot.pause()
        shot = normalise(app.export_screenshot())
        if shot == previous:
            return app.export_screenshot()
        previous = shot
    return app.export_screenshot()

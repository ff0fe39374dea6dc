"""The screenshot script makes every simulated screenshot it names, and the committed ones are
what it makes today (so the README never shows a dashboard the code no longer draws)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from svg_snapshot import normalise

ROOT = Path(__file__).resolve().parents[1]
REAL_RUN_SHOTS = {"dashboard-demo-real.svg"}
"""Saved with the S key during a real run; no script makes them."""


def load_script():
    spec = importlib.util.spec_from_file_location(
        "make_screenshots", ROOT / "scripts/make_screenshots.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_regenerates_every_simulated_screenshot_as_committed(tmp_path):
    script = load_script()
    written = script.make_all(tmp_path)
    assert sorted(p.name for p in written) == sorted(script.SIMULATED)
    committed = {p.name for p in (ROOT / "screenshots").glob("*.svg")}
    assert committed == set(script.SIMULATED) | REAL_RUN_SHOTS
    stale = [
        p.name
        for p in written
        if normalise(p.read_text(encoding="utf-8"))
        != normalise((ROOT / "screenshots" / p.name).read_text(encoding="utf-8"))
    ]
    assert not stale, f"regenerate with: uv run python scripts/make_screenshots.py ({stale})"

"""Write the simulated SVG screenshots under screenshots/.

    uv run python scripts/make_screenshots.py [OUT_DIR]

Every file in ``SIMULATED`` is rendered here from the scripted fake supervisor of the
tests (nine workers on four GPUs and the CPU; sixteen on eight GPUs; a three-node
cluster that lost a node), so it looks the same on any machine; its figures are
simulated, not measured. The --no-tui shot replays the headless printer over the same
fake run into a recording console. ``screenshots/dashboard-demo-real.svg`` is not made
here: it is saved with the dashboard's ``S`` key during a real ``tartok-tui demo``.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import sys
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fake supervisor is test scaffolding

from fake_supervisor import FakeSupervisor  # noqa: E402
from fake_views import cluster_view, fleet_view  # noqa: E402
from svg_snapshot import normalise  # noqa: E402

from tartok_tui.exit_codes import ExitCode  # noqa: E402
from tartok_tui.progress import HeadlessPrinter  # noqa: E402
from tartok_tui.tui.app import TartokApp  # noqa: E402

UTC = datetime.UTC
SIMULATED = (
    "dashboard.svg",
    "dashboard-help.svg",
    "dashboard-16-workers.svg",
    "dashboard-cluster.svg",
    "no-tui.svg",
)
"""Every screenshot this script makes; the others under screenshots/ are from real runs."""
CONTEXT = "/data/Emilia/EN → /data/tokens/EN   model /models/Spark-TTS-0.5B"


async def _shot(app: TartokApp, size: tuple[int, int], path: Path, title: str, keys=()) -> None:
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
            await pilot.pause()
        # On a loaded machine a resized table may be drawn a few frames late: take the
        # screenshot once two idle points in a row show the same screen.
        previous = None
        for _ in range(40):
            await pilot.pause()
            shot = normalise(app.export_screenshot())
            if shot == previous:
                break
            previous = shot
        path.write_text(app.export_screenshot(title=title), encoding="utf-8")


async def dashboard_shots(out_dir: Path) -> list[Path]:
    main = TartokApp(FakeSupervisor(sim_step_s=0.0), tz=UTC, context=CONTEXT)
    # The cursor on the slot that is waiting to restart: the detail line shows why.
    keys = ["down"] * 7
    await _shot(main, (160, 46), out_dir / "dashboard.svg", "tartok-tui run", keys)
    help_app = TartokApp(FakeSupervisor(sim_step_s=0.0), tz=UTC, context=CONTEXT)
    await _shot(
        help_app, (160, 46), out_dir / "dashboard-help.svg", "tartok-tui: keys", ["question_mark"]
    )
    fleet = TartokApp(FakeSupervisor(fleet_view(8, 2), sim_step_s=0.0), tz=UTC)
    await _shot(
        fleet, (160, 42), out_dir / "dashboard-16-workers.svg", "tartok-tui run: 8 GPUs x 2"
    )
    cluster = TartokApp(FakeSupervisor(cluster_view(), sim_step_s=0.0), tz=UTC)
    await _shot(cluster, (160, 42), out_dir / "dashboard-cluster.svg", "tartok-tui run: 3 nodes")
    return [out_dir / name for name in SIMULATED if name != "no-tui.svg"]


def no_tui_shot(out_dir: Path) -> Path:
    """What `run --no-tui` prints into a log: events, a line every interval, the summary."""
    console = Console(
        record=True, width=216, file=io.StringIO(), force_terminal=True, highlight=False
    )
    printer = HeadlessPrinter(console, live=False, tz=UTC)
    supervisor = FakeSupervisor(on_event=printer.on_event)
    for event in supervisor.snapshot().events[-6:]:
        printer.on_event(event)
    printer.show(supervisor.snapshot())
    for step in range(12):
        supervisor.advance(60.0)
        if step % 4 == 3:
            printer.show(supervisor.snapshot())
    supervisor.request_stop()
    supervisor.finish(ExitCode.INTERRUPTED)
    printer.summary(supervisor.snapshot(), ExitCode.INTERRUPTED)
    path = out_dir / "no-tui.svg"
    console.save_svg(str(path), title="tartok-tui run --no-tui")
    return path


def make_all(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = asyncio.run(dashboard_shots(out_dir))
    written.append(no_tui_shot(out_dir))
    assert sorted(p.name for p in written) == sorted(SIMULATED), written
    return written


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "screenshots"
    for path in make_all(out_dir):
        print(path)


if __name__ == "__main__":
    main()

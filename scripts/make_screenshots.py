"""Write the SVG screenshots under screenshots/.

    uv run python scripts/make_screenshots.py [OUT_DIR]

The dashboard shots come from the scripted fake supervisor (nine workers on
four GPUs and the CPU, one paused, one waiting to restart, one restarted
earlier), so they look the same on any machine; the --no-tui shot replays the
headless printer over the same fake run into a recording console.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import sys
from pathlib import Path

from rich.console import Console

from tartok_tui.exit_codes import ExitCode
from tartok_tui.fake_supervisor import FakeSupervisor, fleet_view
from tartok_tui.progress import HeadlessPrinter
from tartok_tui.tui.app import TartokApp
from tartok_tui.tui.widgets import WorkerTable

UTC = datetime.UTC


async def dashboard_shots(out_dir: Path) -> list[Path]:
    written = []
    supervisor = FakeSupervisor(sim_step_s=0.0)
    context = "/data/Emilia/EN → /data/tokens/EN   model /models/Spark-TTS-0.5B"
    app = TartokApp(supervisor, tz=UTC, context=context)
    async with app.run_test(size=(160, 46)) as pilot:
        table = app.query_one(WorkerTable)
        # The cursor on the slot that is waiting to restart: the detail line shows why.
        table.move_cursor(row=table.get_row_index("slot:5"))
        await pilot.pause()
        written.append(out_dir / "dashboard.svg")
        written[-1].write_text(app.export_screenshot(title="tartok-tui run"), encoding="utf-8")
        await pilot.press("question_mark")
        await pilot.pause()
        written.append(out_dir / "dashboard-help.svg")
        written[-1].write_text(app.export_screenshot(title="tartok-tui: keys"), encoding="utf-8")

    app = TartokApp(FakeSupervisor(fleet_view(8, 2), sim_step_s=0.0), tz=UTC)
    async with app.run_test(size=(160, 42)) as pilot:
        await pilot.pause()
        written.append(out_dir / "dashboard-16-workers.svg")
        written[-1].write_text(
            app.export_screenshot(title="tartok-tui run: 8 GPUs x 2 workers"), encoding="utf-8"
        )
    return written


def no_tui_shot(out_dir: Path) -> Path:
    """What `run --no-tui` prints into a log: events, a line every interval, the summary."""
    console = Console(
        record=True, width=180, file=io.StringIO(), force_terminal=True, highlight=False
    )
    printer = HeadlessPrinter(console, live=False, tz=UTC)
    supervisor = FakeSupervisor(on_event=printer.on_event)
    for event in supervisor.snapshot().events[-6:]:
        printer.on_event(event)
    for step in range(12):
        supervisor.advance(60.0)
        if step % 4 == 3:
            printer.show(supervisor.snapshot())
    supervisor.request_stop()
    supervisor.finish(ExitCode.INTERRUPTED, "interrupted by a stop request")
    printer.summary(supervisor.snapshot(), ExitCode.INTERRUPTED)
    path = out_dir / "no-tui.svg"
    console.save_svg(str(path), title="tartok-tui run --no-tui")
    return path


def main() -> None:
    out_dir = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parents[1] / "screenshots"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = asyncio.run(dashboard_shots(out_dir))
    written.append(no_tui_shot(out_dir))
    for path in written:
        print(path)


if __name__ == "__main__":
    main()

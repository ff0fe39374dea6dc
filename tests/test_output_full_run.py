"""A full output disk stops the run cleanly (exit 4); after space is freed, the same
command completes exactly once. A real, small tmpfs where this sandbox lets us mount one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from run_support import _assert_exactly_once, _config, _good_tars, _run

from tartok_tui.exit_codes import ExitCode
from tartok_tui.supervisor.supervisor import Supervisor

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_output_disk_stops_the_run_and_a_rerun_completes_exactly_once(
    tmp_path: Path, model_dir: Path, small_disk: Path
) -> None:
    inp, out = tmp_path / "in", small_disk / "out"
    good = _good_tars(inp, n_tars=4, n_samples=4)
    out.mkdir()
    # Leave a few KiB: room for the run's own checks and the first lines, not for the tars.
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (64 * 1024 - 8 * 1024))
    cfg = _config(inp, out, model_dir, log_dir=tmp_path / "logs")

    summary = await _run(Supervisor(cfg))
    assert summary.exit_code == ExitCode.OUTPUT_UNAVAILABLE, summary.exit_reason
    assert "no space" in summary.exit_reason and str(out) in summary.exit_reason
    # Nothing half-done is visible: a tar is either done or has no tokens file at all.
    assert summary.tars_failed == 0 and summary.tars_unfinished > 0

    filler.unlink()
    again = await _run(Supervisor(cfg))
    assert again.exit_code == 0, again.exit_reason
    _assert_exactly_once(out, good)

"""`tartok-tui run --no-tui` for real: a subprocess, worker subprocesses, the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tartok_tui.demo.data import write_emilia_tar

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]

# Runs the real CLI in-process, then reports whether textual was ever imported.
RUN_AND_CHECK_MODULES = textwrap.dedent(
    """
    import sys
    from tartok_tui.cli import app

    try:
        app(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
    textual = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
    print(f"EXIT={code} TEXTUAL={textual}")
    """
)


def test_no_tui_run_tokenizes_everything_without_loading_textual_and_status_verify_agree(
    tmp_path: Path, tiny_model_dir
):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_emilia_tar(inp / "EN-B000000.tar", 3, seed=0, audio_format="flac", min_s=1.0, max_s=2.0)
    write_emilia_tar(
        inp / "EN-B000001.tar", 3, seed=1, batch=1, audio_format="flac", min_s=1.0, max_s=2.0,
        broken={1: "undecodable_audio"},
    )  # fmt: skip
    (inp / "EN-B000002.tar.zst").write_bytes(b"zstd data the reader does not take")
    args = ["run", "--input_dir", str(inp), "--output_dir", str(out), "--model_dir", str(tiny_model_dir),
            "--num_proc", "2", "--device", "cpu", "--threads-per-worker", "1", "--no-tui",
            "--stats-every", "2"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", RUN_AND_CHECK_MODULES, *args],
        capture_output=True, text=True, cwd=REPO, timeout=240,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert "EXIT=0 TEXTUAL=[]" in output, output
    assert "worker started" in output
    assert "1 files look like shards but are not read" in output and "EN-B000002.tar.zst" in output
    assert "EN-B000001.tar: sample" in output  # the undecodable clip's error event
    assert "total requests: " in output  # the stats line
    assert "Run finished: all tars done (exit code 0)" in output

    cli = [sys.executable, "-m", "tartok_tui"]
    status = subprocess.run(
        [*cli, "status", str(out), "--json", "--counts"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    data = json.loads(status.stdout)
    assert (data["tars_done"], data["lines"], data["error_records"]) == (2, 5, 1)
    verify = subprocess.run(
        [*cli, "verify", str(inp), str(out)], capture_output=True, text=True, timeout=120
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "every sample accounted for exactly once" in verify.stdout

    # Running again skips everything: the run is resumable from its files alone.
    again = subprocess.run([sys.executable, "-c", RUN_AND_CHECK_MODULES, *args], capture_output=True,
                           text=True, cwd=REPO, timeout=240)  # fmt: skip
    assert "EXIT=0" in again.stdout, again.stdout + again.stderr
    assert "2 tars, 2 already done, 0 to process" in again.stdout

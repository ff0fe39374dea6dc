"""The cheap benchmarks still run against today's code (tiny sizes; no figure is checked:
speed is measured by the benchmarks themselves, on a quiet machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

CASES = {
    "bench_feed": (["--minutes", "1", "--tar-minutes", "0.5", "--loads", "0.3"], "of S"),
    "bench_output_size": (["--tars", "1", "--samples-per-tar", "50"], "JSONL / Parquet size"),
    "bench_input": (["--repeats", "1", "--samples", "10"], '"tar_reading"'),
    "bench_export": (["--tars", "1", "--samples-per-tar", "30", "--rounds", "1"], "GB/min read"),
    "bench_decode": (
        ["--preset", "tiny", "--audio-seconds", "6", "--batch", "2"],
        "largest |ours - reference| over every sample: 0.00e+00",
    ),
    "bench_verify": (
        ["--tars", "3", "--keys", "20", "--s3", "--deep-tars", "1", "--deep-keys", "5"],
        "Scaled to Emilia",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_benchmark_runs_and_prints_its_table(name: str, tmp_path: Path) -> None:
    args, expected = CASES[name]
    if name != "bench_input":  # the others write their tars under --workdir
        args = [*args, "--workdir", str(tmp_path / "work")]
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *args],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert expected in done.stdout

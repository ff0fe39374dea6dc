"""`tartok-tui demo`: builds its data and tiny model once, runs the real pipeline, verifies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tartok_tui.demo.run import DEMO_BROKEN, build_demo
from tartok_tui.output.verify import verify

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]


def test_the_demo_data_is_built_once_and_plants_each_broken_sample(tmp_path: Path) -> None:
    data = build_demo(tmp_path, tars=4, samples_per_tar=8)
    assert sorted(p.name for p in data.input_dir.glob("*.tar")) == [
        f"EN-B{t:06d}.tar" for t in range(4)
    ]
    assert (data.model_dir / "BiCodec" / "model.safetensors").is_file()
    assert data.samples == 32 and data.broken == len(DEMO_BROKEN)
    stamp = (data.input_dir / "EN-B000000.tar").stat().st_mtime_ns
    again = build_demo(tmp_path, tars=4, samples_per_tar=8)
    assert (again.input_dir / "EN-B000000.tar").stat().st_mtime_ns == stamp  # reused, not rebuilt
    bigger = build_demo(tmp_path, tars=5, samples_per_tar=8)
    assert len(list(bigger.input_dir.glob("*.tar"))) == 5  # a different spec rebuilds


def test_demo_runs_the_pipeline_and_every_sample_is_accounted_for(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tartok_tui", "demo", "--no-tui", "--tars", "4",
         "--samples-per-tar", "8", "--num-proc", "1", "--device", "cpu",
         "--demo-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=280,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "random weights" in output
    assert "every sample accounted for" in output
    out = tmp_path / "output"
    assert verify(tmp_path / "input", out).ok
    errors = [
        json.loads(line)
        for f in sorted((out / "errors").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    assert sorted((e["tar"], e["index"]) for e in errors) == sorted(
        (f"EN-B{t:06d}.tar", i) for t, i, _ in DEMO_BROKEN
    )
    lines = sum(len(f.read_text().splitlines()) for f in out.glob("*.jsonl"))
    assert lines == 32 - len(DEMO_BROKEN)

    # --keep-output shows resume: every tar is found done, none is redone, nothing changes.
    before = {p: p.read_bytes() for p in out.rglob("*.jsonl")}
    again = subprocess.run(
        [sys.executable, "-m", "tartok_tui", "demo", "--no-tui", "--tars", "4",
         "--samples-per-tar", "8", "--num-proc", "1", "--device", "cpu",
         "--demo-dir", str(tmp_path), "--keep-output"],
        capture_output=True, text=True, cwd=REPO, timeout=280,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert "4 tars, 4 already done, 0 to process" in again.stdout
    assert "worker started" not in again.stdout
    assert {p: p.read_bytes() for p in out.rglob("*.jsonl")} == before

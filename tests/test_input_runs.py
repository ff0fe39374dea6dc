"""Tars as people make them, through a real run: members out of order, gzip, AAC in m4a,
and members over the size limits. Real worker processes with the tiny model."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from run_support import _assert_exactly_once, _config, _read_outputs, _run

from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.supervisor.supervisor import Supervisor
from tartok_tui.supervisor.views import Event

pytestmark = pytest.mark.timeout(300)


async def test_ungrouped_gzipped_and_m4a_tars_give_every_sample_exactly_once(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = {}
    # Every JSON member first, then every audio member: a sample's members are not adjacent.
    for s in write_emilia_tar(
        inp / "EN-B000000.tar", 4, seed=0, batch=0, audio_format="flac",
        min_s=1.0, max_s=2.0, layout="ungrouped",
    ):  # fmt: skip
        good[s.key] = s
    plain = tmp_path / "EN-B000001.tar"
    for s in write_emilia_tar(plain, 3, seed=1, batch=1, audio_format="m4a", min_s=1.0, max_s=2.0):
        good[s.key] = s
    with open(plain, "rb") as src, gzip.open(inp / "EN-B000001.tar.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    events: list[Event] = []
    cfg = _config(inp, out, model_dir, num_proc=1)
    summary = await _run(Supervisor(cfg, on_event=events.append))
    assert summary.exit_code == 0, summary.exit_reason
    _assert_exactly_once(out, good)
    _, errors = _read_outputs(out)
    assert all(not records for records in errors.values()), errors
    assert (out / "EN-B000001.jsonl").exists()  # X.tar.gz is named like X.tar
    assert any("read again by key" in e.message for e in events)
    # A rerun finds both done.
    again = await _run(Supervisor(cfg))
    assert again.exit_code == 0 and again.tars_skipped == 2


async def test_members_over_the_size_limits_get_error_records_and_the_rest_goes_on(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    samples = write_emilia_tar(
        inp / "EN-B000000.tar", 4, seed=0, audio_format="wav", sr=16000, min_s=0.5, max_s=3.0
    )
    # 16-bit WAV at 16 kHz is 32,000 bytes a second: a limit halfway between the shortest
    # and the longest clip passes some and refuses the others.
    sizes = {s.key: s.duration * 32000 for s in samples}
    limit = (min(sizes.values()) + max(sizes.values())) / 2
    cfg = _config(inp, out, model_dir, num_proc=1, max_audio_mib=limit / 2**20)
    summary = await _run(Supervisor(cfg))
    assert summary.exit_code == 0, summary.exit_reason
    keys, errors = _read_outputs(out)
    too_big = {key for key, size in sizes.items() if size > limit}
    assert too_big and too_big != {s.key for s in samples}
    assert set(keys) == {s.key for s in samples} - too_big
    recorded = {r["key"]: r for r in errors["EN-B000000"]}
    assert set(recorded) == too_big
    assert all("over the" in r["reason"] and "MiB limit" in r["reason"] for r in recorded.values())

"""A lost device, memory that runs out and a failing model never mark a tar done, and a
member the parser chokes on costs its sample alone: real `tartok-tui run` processes, worker
subprocesses, the tiny model on the CPU, faults injected with TARTOK_FAULT_INJECT."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tartok_tui.demo.data import GeneratedSample, write_emilia_tar
from tartok_tui.output.paths import tar_output_paths
from tartok_tui.worker.channel import EXIT_DEVICE_LOST, EXIT_OUT_OF_MEMORY
from tartok_tui.worker.faults import lost_device_error

pytestmark = pytest.mark.timeout(400)

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "tartok_tui"]


def codec_reports_lost_devices(model_dir: Path) -> bool:
    """Whether the tokenizer raises DeviceFailure (instead of writing per-clip model errors)
    when a model call fails the way a lost CUDA device does."""
    from tartok_tui.codec.errors import DeviceFailure
    from tartok_tui.codec.tokenizer import BiCodecTokenizer

    tokenizer = BiCodecTokenizer.load(model_dir, streams=1)

    def lose_device(batch_size: int) -> None:
        raise lost_device_error()

    tokenizer.fault_hook = lose_device
    clip = np.random.default_rng(0).uniform(-0.3, 0.3, 16000).astype(np.float32)
    try:
        tokenizer.tokenize_many([clip])
    except DeviceFailure:
        return True
    finally:
        tokenizer.close()
    return False


def _write_tars(inp: Path, n_tars: int, n_samples: int) -> dict[str, GeneratedSample]:
    good = {}
    for i in range(n_tars):
        for s in write_emilia_tar(
            inp / f"EN-B{i:06d}.tar", n_samples, seed=i, batch=i, audio_format="flac",
            min_s=1.0, max_s=2.5,
        ):  # fmt: skip
            good[s.key] = s
    return good


def _run(inp: Path, out: Path, model_dir: Path, fault: str, *extra: str):
    args = [*CLI, "run", "--input-dir", str(inp), "--output-dir", str(out),
            "--model-dir", str(model_dir), "--num-proc", "2", "--device", "cpu",
            "--threads-per-worker", "1", "--backoff-initial-s", "0.1", "--backoff-max-s", "0.5",
            "--no-tui", "--worker-env", f"TARTOK_FAULT_INJECT={fault}", *extra]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=360)


def _outputs(out: Path) -> tuple[Counter, list[dict]]:
    """Keys of every committed line (with multiplicity) and every error record."""
    keys: Counter = Counter()
    for path in out.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            keys[json.loads(line)["key"]] += 1
    errors = [
        json.loads(line)
        for path in (out / "errors").glob("*.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    return keys, errors


def test_a_lost_device_never_writes_a_record_and_every_sample_is_done_once_by_fresh_workers(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    if not codec_reports_lost_devices(tiny_model_dir):
        pytest.skip("the tokenizer still writes a lost device down as model errors")
    inp, out = tmp_path / "in", tmp_path / "out"
    # Each worker process loses its device after 10 samples, so none can do more than one
    # tar and a bit of the next: every tar is finished by a fresh process.
    good = _write_tars(inp, n_tars=5, n_samples=6)
    # A permissive crash limit: every worker dies. The poison threshold is the default:
    # a tar that was on two lost devices is isolated, and isolation must not blame the
    # sample a lost device happened to die in.
    result = _run(
        inp, out, tiny_model_dir, "device_lost_after=10", "--crash-limit", "1000",
        "--poison-threshold", "1",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "device cpu lost" in output, output  # the fault fired and the worker said why
    assert f"exit code {EXIT_DEVICE_LOST}" in output, output
    keys, errors = _outputs(out)
    assert set(keys) == set(good) and max(keys.values()) == 1, keys
    assert errors == []  # above all, no "model" record
    verify = subprocess.run(
        [*CLI, "verify", str(inp), str(out)], capture_output=True, text=True, timeout=120
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert not list((out / ".partial").rglob("*.jsonl*"))


def test_a_tar_with_model_errors_in_most_clips_is_failed_not_committed_and_others_are_done(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _write_tars(inp, n_tars=3, n_samples=6)
    bad_tar = inp / "EN-B000001.tar"
    result = _run(inp, out, tiny_model_dir, f"model_error_tar={bad_tar.name}")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output  # incomplete: one tar failed
    assert "EN-B000001.tar failed" in output and "model errors" in output, output
    paths = tar_output_paths(out, inp, bad_tar)
    assert not paths.jsonl.exists() and not paths.errors.exists()
    keys, errors = _outputs(out)
    done = {k for k in good if not k.startswith("EN_B00001_")}
    assert set(keys) == done and max(keys.values()) == 1
    assert errors == []
    assert not list((out / ".partial").rglob("*.jsonl*"))


def _verify(inp: Path, out: Path) -> None:
    verify = subprocess.run(
        [*CLI, "verify", str(inp), str(out)], capture_output=True, text=True, timeout=120
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_clip_out_of_memory_alone_commits_nothing_for_its_tar_and_a_rerun_finishes_it(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _write_tars(inp, n_tars=3, n_samples=6)
    oom_tar = inp / "EN-B000001.tar"
    # A poison threshold of 1: were out of memory a kill, the tar would be isolated at once.
    result = _run(inp, out, tiny_model_dir, f"oom_tar={oom_tar.name}", "--poison-threshold", "1")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output  # incomplete: that tar failed for this run
    assert f"ran out of device memory (exit code {EXIT_OUT_OF_MEMORY})" in output, output
    assert "EN-B000001.tar failed: out of device memory 3 times" in output, output
    assert "sample by sample" not in output, output
    paths = tar_output_paths(out, inp, oom_tar)
    assert not paths.jsonl.exists() and not paths.errors.exists()
    keys, errors = _outputs(out)
    assert set(keys) == {k for k in good if not k.startswith("EN_B00001_")}
    assert max(keys.values()) == 1 and errors == []  # no oom, no worker_crash record
    summary = json.loads((out / "run-summary.json").read_text())
    [failed] = [t for t in summary["tars"] if t["status"] == "failed"]
    assert failed["tar"] == oom_tar.name and failed["worker_kills"] == 0
    assert "clip does not fit even alone" in failed["reason"]
    # Memory back (no fault): the next run does that tar, and only that one, exactly once.
    again = _run(inp, out, tiny_model_dir, "")
    assert again.returncode == 0, again.stdout + again.stderr
    keys, errors = _outputs(out)
    assert set(keys) == set(good) and max(keys.values()) == 1 and errors == []
    _verify(inp, out)
    assert not list((out / ".partial").rglob("*.jsonl*"))


def test_a_json_member_the_parser_chokes_on_costs_only_its_sample(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _write_tars(inp, n_tars=2, n_samples=6)
    # A third tar with 200,000 nested brackets as the JSON of its third sample, among
    # good ones: json.loads raises RecursionError there.
    written = write_emilia_tar(
        inp / "EN-B000002.tar", 6, seed=2, batch=2, audio_format="flac", min_s=1.0,
        max_s=2.5, broken={2: "nested_json"},
    )  # fmt: skip
    nested = written[2].key
    good.update({s.key: s for s in written if s.broken is None})
    result = _run(inp, out, tiny_model_dir, "")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    keys, errors = _outputs(out)
    assert set(keys) == set(good) and max(keys.values()) == 1  # the other five too
    assert [(e["key"], e["stage"]) for e in errors] == [(nested, "sample")], errors
    assert "invalid JSON: RecursionError" in errors[0]["reason"]
    _verify(inp, out)

"""`tartok-tui run` as a real process: its exit codes, signals, logs, options and output bytes.

Each test starts the CLI as users do (a subprocess of `python -m tartok_tui`), with the tiny
random model and small generated tars.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.exit_codes import ExitCode

pytestmark = pytest.mark.timeout(300)

CLI = [sys.executable, "-m", "tartok_tui"]


def _tars(inp: Path, n: int, samples: int = 4, sub: str = "") -> None:
    for i in range(n):
        write_emilia_tar(
            inp / sub / f"EN-B{i:06d}.tar", samples, seed=i, batch=i, audio_format="flac",
            min_s=1.0, max_s=2.0,
        )  # fmt: skip


def _args(inp: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [*CLI, "run", "-i", str(inp), "-o", str(out), "-m", str(model), "--device", "cpu",
            "--no-tui", "--num-proc", "2", "--backoff-initial-s", "0.1", *extra]  # fmt: skip


def _env(faults: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARTOK_")}
    if faults:
        env["TARTOK_FAULT_INJECT"] = faults
    return env


def _run(args: list[str], faults: str = "", timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=_env(faults))


def _tree(root: Path) -> dict[str, bytes]:
    """Every committed output file (tokens and error records), by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*.jsonl"))
        if p.relative_to(root).parts[0] not in (".partial", "logs")
    }


def _wait_for_file(pattern_root: Path, glob: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not list(pattern_root.glob(glob)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {glob} under {pattern_root} in time"
        time.sleep(0.05)


def test_killed_workers_and_a_resume_give_byte_identical_output(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    inp = tmp_path / "in"
    _tars(inp, 4, samples=3)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    first = _run(_args(inp, clean, tiny_model_dir))
    assert first.returncode == 0, first.stdout + first.stderr
    # Every worker process SIGKILLs itself after 4 samples, one into its second tar: that
    # tar is redone by a fresh process.
    second = _run(
        _args(inp, killed, tiny_model_dir, "--crash-limit", "100", "--poison-threshold", "100"),
        faults="kill_after=4",
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "worker died (killed by SIGKILL" in second.stdout
    assert _tree(clean) and _tree(killed) == _tree(clean)


def test_sigterm_stops_with_130_and_the_same_command_completes_byte_identically(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    inp, out, clean = tmp_path / "in", tmp_path / "out", tmp_path / "clean"
    _tars(inp, 6)
    args = _args(inp, out, tiny_model_dir)
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=_env("slow_ms=300"),
    )  # fmt: skip
    _wait_for_file(out, "EN-B*.jsonl", proc, 120)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INTERRUPTED, output
    assert "stopping: aborting tars in progress" in output
    assert len(_tree(out)) < 6
    again = _run(args)
    assert again.returncode == 0, again.stdout
    reference = _run(_args(inp, clean, tiny_model_dir))
    assert reference.returncode == 0
    assert _tree(out) == _tree(clean)


def test_every_worker_failing_to_load_exits_3_saying_why(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    _tars(inp, 2)
    done = _run(_args(inp, out, tiny_model_dir), faults="load_fail")
    assert done.returncode == ExitCode.ALL_FATAL, done.stdout + done.stderr
    assert "every worker slot is fatal" in done.stdout and "injected load failure" in done.stdout


def test_a_stop_waits_at_most_stop_timeout_then_kills(tmp_path: Path, tiny_model_dir: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    _tars(inp, 2)
    # A batch takes ~40 s (2 s per model stage): an abort waits for it, unless the stop
    # timeout kills first.
    args = _args(inp, out, tiny_model_dir, "--stop-timeout-s", "2")
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=_env("slow_stage_ms=2000"),
    )  # fmt: skip
    assert proc.stdout is not None
    loaded = 0
    for line in proc.stdout:
        loaded += "model loaded in" in line
        if loaded == 2:
            break
    time.sleep(4)  # both workers took a tar and are inside its first batch
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INTERRUPTED, rest
    assert time.monotonic() - started < 20
    assert "workers still alive after 2 s: killing them" in rest


def test_worker_logs_go_to_log_dir_and_say_what_each_worker_runs_with(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    inp, out, logs = tmp_path / "in", tmp_path / "out", tmp_path / "my-logs"
    _tars(inp, 2)
    done = _run(
        _args(inp, out, tiny_model_dir, "--log-dir", str(logs), "--decode-workers", "3",
              "--threads-per-worker", "1")
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in logs.iterdir()) == ["worker-0.log", "worker-1.log"]
    assert not (out / "logs").exists()
    for log in logs.iterdir():
        text = log.read_text()
        assert "ready on cpu" in text and "1 torch threads" in text and "3 decode threads" in text
    default = _run(_args(inp, tmp_path / "out2", tiny_model_dir))
    assert default.returncode == 0
    assert (tmp_path / "out2" / "logs" / "worker-0.log").read_text().count("ready on cpu") == 1


def test_a_range_of_a_recursive_input_is_run_and_verified(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    _tars(inp, 2, sub="EN")
    _tars(inp, 2, sub="ZH")
    # Sorted by relative path: EN/0, EN/1, ZH/0, ZH/1; the range [1, 3) is EN/1 and ZH/0.
    ranged = ["--recursive", "--from-index", "1", "--to-index", "3"]
    done = _run(_args(inp, out, tiny_model_dir, *ranged))
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(str(p.relative_to(out)) for p in out.glob("*/*.jsonl")) == [
        "EN/EN-B000001.jsonl",
        "ZH/EN-B000000.jsonl",
    ]
    verify = [*CLI, "verify", str(inp), str(out)]
    in_range = _run([*verify, *ranged])
    assert in_range.returncode == 0, in_range.stdout
    assert "range: tars [1, 3)" in in_range.stdout and "subdirectories included" in in_range.stdout
    whole = _run([*verify, "--recursive", "--json"])
    assert whole.returncode == ExitCode.INCOMPLETE  # the two tars outside the range have no output
    assert '"tars_missing_output"' in whole.stdout and "EN/EN-B000000.tar" in whole.stdout

"""One writer per output, through real runs: `tartok-tui run` processes (locally and onto S3
on 127.0.0.1) and a supervisor with real workers that loses its claim mid-way."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_support import _assert_exactly_once, _config, _good_tars, _run, _wait_for
from s3_support import FAST_FAIL, S3Server, ensure_buckets
from test_cli_process import _args, _env, _wait_for_file
from test_cli_process import _run as _cli

from tartok_tui.exit_codes import ExitCode
from tartok_tui.output.claim import Holder, OutputClaim, Selection, claim_store
from tartok_tui.output.claim_files import LocalClaims
from tartok_tui.output.owner import Owner
from tartok_tui.output.paths import CLAIMS_DIR
from tartok_tui.output.store import StoreOutput
from tartok_tui.output.verify import verify
from tartok_tui.storage import Access
from tartok_tui.supervisor.supervisor import Supervisor
from tartok_tui.supervisor.views import Event

pytestmark = pytest.mark.timeout(600)

CLI = [sys.executable, "-m", "tartok_tui"]


def _selection(inp: Path, n_tars: int) -> Selection:
    """The tars a run over all of ``inp`` claims (as the CLI names them)."""
    return Selection(os.path.realpath(inp), False, 0, n_tars)


def _elsewhere(selection: Selection, heartbeat_age: float) -> bytes:
    """A claim written by a run on another machine, last alive ``heartbeat_age`` s ago."""
    now = time.time()
    owner = Owner("node-17", "node-17/boot/pid:[1]", 4242, 1.0)
    return Holder("elsewhere0001", owner, selection, now - 7200, now - heartbeat_age).encode()


def _claims(out: Path) -> list[str]:
    return LocalClaims(out).names()


def _start(args: list[str], faults: str = "") -> subprocess.Popen[str]:
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(faults)
    )


def test_a_second_run_is_refused_while_the_first_runs_and_the_first_writes_each_tar_once(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _good_tars(inp, n_tars=6, n_samples=3)
    args = _args(inp, out, model_dir)
    first = _start(args, faults="slow_ms=300")
    try:
        _wait_for_file(out, "EN-B*.jsonl", first, 180)
        # Frozen mid-way, the first run is alive however slowly the second one starts.
        first.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        second = _cli(args)
        assert second.returncode == ExitCode.CLAIMED, second.stdout + second.stderr
        refusal = " ".join(second.stderr.split())
        host = socket.gethostname()
        assert f"another run is writing these tars into {out}" in refusal
        assert f"on host {host} (pid {first.pid})" in refusal, refusal
        assert re.search(r"last heartbeat \d+ s ago", refusal) and "--take-over" in refusal
        assert "worker started" not in second.stdout  # refused before any worker
        assert time.monotonic() - started < 120
        # status and verify need no claim; status names the holder.
        status = subprocess.run([*CLI, "status", str(out), "--json"], capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert status.returncode == 0, status.stderr
        [holder] = json.loads(status.stdout)["claims"]
        assert holder["pid"] == first.pid and holder["host"] == host and holder["gone"] is None
        checked = subprocess.run([*CLI, "verify", str(inp), str(out)], capture_output=True,
                                 text=True, timeout=120)  # fmt: skip
        assert checked.returncode in (ExitCode.OK, ExitCode.INCOMPLETE), checked.stderr
    finally:
        first.send_signal(signal.SIGCONT)
    output, _ = first.communicate(timeout=300)
    assert first.returncode == ExitCode.OK, output
    _assert_exactly_once(out, good)
    assert verify(inp, out).ok
    assert _claims(out) == []


def test_after_a_kill_9_the_next_run_takes_over_and_completes_each_tar_once(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _good_tars(inp, n_tars=6, n_samples=3)
    args = _args(inp, out, model_dir)
    first = _start(args, faults="slow_ms=300")
    try:
        _wait_for_file(out, "EN-B*.jsonl", first, 180)
        first.kill()
        first.wait(60)
    finally:
        if first.poll() is None:
            first.kill()
    assert _claims(out) != []  # a kill -9 leaves its claim behind
    again = _cli(args)
    assert again.returncode == ExitCode.OK, again.stdout + again.stderr
    text = " ".join(again.stdout.split())
    assert "took over the claim on these tars from run" in text
    assert f"its process (pid {first.pid} on this machine) has ended" in text
    # The takeover is said in the run's first lines, before any worker starts.
    assert text.index("took over the claim") < text.index("worker started")
    _assert_exactly_once(out, good)
    assert _claims(out) == []


def test_a_stale_claim_from_another_host_is_taken_over_a_fresh_one_refused_unless_forced(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _good_tars(inp, n_tars=1, n_samples=2)
    store, selection = LocalClaims(out), _selection(inp, 1)
    args = _args(inp, out, model_dir)

    store.create(selection.name, _elsewhere(selection, heartbeat_age=10))
    refused = _cli(args)
    assert refused.returncode == ExitCode.CLAIMED, refused.stdout + refused.stderr
    assert "on host node-17 (pid 4242)" in " ".join(refused.stderr.split())
    assert not list(out.glob("*.jsonl"))

    found = store.read(selection.name)
    assert found is not None
    store.replace(selection.name, _elsewhere(selection, heartbeat_age=3600), found.token)
    taken = _cli(args)
    assert taken.returncode == ExitCode.OK, taken.stdout + taken.stderr
    text = " ".join(taken.stdout.split())
    assert "took over the claim on these tars from run elsewhere0001 on host node-17" in text
    assert re.search(r"its last heartbeat is 36\d\d s old \(stale after 300 s\)", text), text
    _assert_exactly_once(out, good)
    assert _claims(out) == []

    store.create(selection.name, _elsewhere(selection, heartbeat_age=0))
    forced = subprocess.run(args, capture_output=True, text=True, timeout=240,
                            env={**_env(), "TARTOK_TAKE_OVER": "1"})  # fmt: skip
    assert forced.returncode == ExitCode.OK, forced.stdout + forced.stderr
    assert "forced by --take-over" in forced.stdout
    assert _claims(out) == []


def test_the_claim_is_removed_when_every_worker_fails_and_when_the_run_is_stopped(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    _good_tars(inp, n_tars=4, n_samples=3)
    args = _args(inp, out, model_dir)
    fatal = _cli(args, faults="load_fail")
    assert fatal.returncode == ExitCode.ALL_FATAL, fatal.stdout + fatal.stderr
    assert _claims(out) == []

    run = _start(args, faults="slow_ms=300")
    _wait_for_file(out, "EN-B*.jsonl", run, 180)
    run.send_signal(signal.SIGTERM)
    output, _ = run.communicate(timeout=180)
    assert run.returncode == ExitCode.INTERRUPTED, output
    assert _claims(out) == []


async def test_a_run_that_loses_its_claim_stops_leasing_and_commits_no_more(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    _good_tars(inp, n_tars=8, n_samples=4)
    out.mkdir()
    store = LocalClaims(out)
    store.heartbeat_s = 0.2
    claim = OutputClaim.acquire(store, _selection(inp, 8))
    events: list[Event] = []
    config = _config(inp, out, model_dir, worker_env={"TARTOK_FAULT_INJECT": "slow_ms=400"})
    sup = Supervisor(config, on_event=events.append, claim=claim)
    task = asyncio.create_task(_run(sup))
    await _wait_for(lambda: list(out.glob("EN-B*.jsonl")), 180, "a first committed tar")
    thief = await asyncio.to_thread(
        OutputClaim.acquire, claim_store(out), _selection(inp, 8), take_over=True
    )
    summary = await task
    assert summary.exit_code == ExitCode.CLAIMED, summary.exit_reason
    assert f"another run took over the output {out}: run {thief.me.run_id}" in summary.exit_reason
    assert summary.tars_done < 8
    # Tars in progress went back uncommitted: what is on disk is what the run counted done.
    assert len(list(out.glob("EN-B*.jsonl"))) == summary.tars_done
    assert not [p for p in (out / ".partial").rglob("*.part")]
    assert any("stopping the run: another run took over" in e.message for e in events)
    assert claim.release() is None  # lost: the thief's claim stays
    assert store.names() == [thief.name]
    assert thief.release() is None


# ---------------------------------------------------------------- S3

BUCKET = "tartok-claim-runs"


def test_on_s3_a_held_claim_refuses_the_run_and_a_finished_run_leaves_no_claim(
    s3: S3Server, tmp_path: Path, model_dir: Path
) -> None:
    if not s3.running:
        s3.start()
    ensure_buckets(BUCKET)
    inp, url = tmp_path / "in", f"s3://{BUCKET}/tokens"
    _good_tars(inp, n_tars=2, n_samples=2)
    args = [*_args(inp, Path("."), model_dir), "--spool-dir", str(tmp_path / "spool")]
    args[args.index("-o") + 1] = url
    held = OutputClaim.acquire(claim_store(url, Access(options=FAST_FAIL)), _selection(inp, 2))
    refused = _cli(args)
    assert refused.returncode == ExitCode.CLAIMED, refused.stdout + refused.stderr
    assert f"(pid {os.getpid()})" in " ".join(refused.stderr.split())
    assert held.release() is None
    done = _cli(args)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    keys = {str(k) for k in StoreOutput(url, Access(options=FAST_FAIL)).list_keys()}
    assert {"EN-B000000.jsonl", "EN-B000001.jsonl"} <= keys
    assert not [k for k in keys if k.startswith(CLAIMS_DIR)]
    assert verify(inp, url, access=Access(options=FAST_FAIL)).ok

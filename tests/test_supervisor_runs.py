"""End-to-end runs of the supervisor with real worker subprocesses and the tiny model (CPU).

Worker start-up imports torch and loads a model (a few seconds on a small
machine), so each test runs one supervisor and checks many things about it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from run_support import (
    _assert_exactly_once,
    _config,
    _good_tars,
    _read_outputs,
    _run,
    _wait_for,
)
from tar_faults import write_empty_tar, write_non_tar, write_truncated_tar

from tartok_tui import messages as m
from tartok_tui.config import ConfigError
from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.output.paths import summary_path
from tartok_tui.shards.reader import Sample, iter_samples
from tartok_tui.supervisor.preflight import validate
from tartok_tui.supervisor.supervisor import Supervisor
from tartok_tui.supervisor.views import Event, WorkerState

pytestmark = pytest.mark.timeout(300)


# ---------------------------------------------------------------- one run, many properties


async def test_killed_workers_lose_nothing_and_every_bad_input_gets_its_error_record(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _good_tars(inp, n_tars=5, n_samples=6)
    broken_kinds = {
        0: "no_audio",
        1: "no_json",
        2: "bad_json",
        3: "undecodable_audio",
        4: "empty_audio",
        5: "too_long",
    }
    samples = write_emilia_tar(
        inp / "EN-B000100.tar",
        7,
        seed=100,
        batch=100,
        audio_format="flac",
        min_s=1.0,
        max_s=2.0,
        broken=broken_kinds,
        too_long_s=4.0,
    )
    good.update({s.key: s for s in samples if s.broken is None})
    broken_keys = {s.key: s.broken for s in samples if s.broken}
    source = tmp_path / "EN-B000200-full.tar"
    write_emilia_tar(source, 6, seed=200, batch=200, audio_format="flac", min_s=1.0, max_s=2.5)
    truncated = write_truncated_tar(source, inp / "EN-B000200.tar", source.stat().st_size // 2)
    # The samples before the cut are good; the one the cut went through is not.
    survivors = [s for s in iter_samples(truncated) if isinstance(s, Sample)]
    assert 0 < len(survivors) < 6
    good.update({s.key: s for s in survivors})
    write_non_tar(inp / "EN-B000300.tar")
    write_empty_tar(inp / "EN-B000400.tar")

    events: list[Event] = []
    # An outside SIGKILL looks like a crash; with isolation off the table (a high poison
    # threshold) no sample can be blamed for these kills, so every good one must come out.
    cfg = _config(
        inp,
        out,
        model_dir,
        max_duration=3.0,
        stats_every=10,
        poison_threshold=20,
        worker_env={"TARTOK_FAULT_INJECT": "slow_ms=300"},
    )
    sup = Supervisor(cfg, on_event=events.append)
    killed: list[WorkerState] = []
    killed_pids: set[int] = set()

    def in_the_middle(w) -> bool:
        # Some samples written and at least two to go: nowhere near its commit.
        total = w.tar_samples_expected
        return bool(total) and 1 <= w.tar_samples_done <= total - 2

    def victim(states: set[WorkerState], mid_tar: bool) -> object:
        for w in sup.snapshot().workers:
            if w.pid in killed_pids:
                continue  # dead, and not yet seen to be by the supervisor
            if w.pid and w.state in states and (not mid_tar or in_the_middle(w)):
                return w
        return None

    async def kill_when(states: set[WorkerState], mid_tar: bool, what: str) -> None:
        await _wait_for(lambda: victim(states, mid_tar) is not None, 120, what)
        w = victim(states, mid_tar)
        assert w is not None
        os.kill(w.pid, signal.SIGKILL)
        killed_pids.add(w.pid)
        killed.append(w.state)

    async def kill_workers() -> None:
        # Kills at chosen moments, not at random ones: one while loading, two in the
        # middle of a tar (its first samples written, the rest not).
        await kill_when({WorkerState.STARTING, WorkerState.LOADING}, False, "a loading worker")
        for n in (1, 2):
            await kill_when({WorkerState.RUNNING}, True, f"a worker mid-tar ({n})")

    killer = asyncio.create_task(kill_workers())
    summary = await _run(sup)
    await killer  # every kill happened (a failed wait fails the test here)

    assert summary.exit_code == 0, summary.exit_reason
    assert killed.count(WorkerState.RUNNING) == 2
    assert sum(t.worker_kills for t in summary.tars) >= 2  # the leases went back to the queue
    view = sup.snapshot()
    assert view.finished and view.tars_done == 9 and view.tars_failed == 0
    assert sum(w.restarts for w in view.workers) >= len(killed)
    assert all(w.state == WorkerState.DONE for w in view.workers)
    _assert_exactly_once(out, good)
    # The killed workers' partial files were swept at the end of the run.
    assert not list((out / ".partial").rglob("*.part"))

    _, errors = _read_outputs(out)
    by_key = {e["key"]: e for e in errors["EN-B000100"]}
    assert {k: by_key[k]["stage"] for k in broken_keys} == {
        k: {"too_long": "too_long", "undecodable_audio": "decode", "empty_audio": "empty"}.get(
            kind, "sample"
        )
        for k, kind in broken_keys.items()
    }
    for name in ("EN-B000200", "EN-B000300", "EN-B000400"):
        assert any(e["key"] is None and e["stage"] == "tar" for e in errors[name]), errors[name]
    assert (out / "EN-B000300.jsonl").read_text() == ""

    written = json.loads(summary_path(out).read_text())
    assert written["exit_code"] == 0 and written["tars_done"] == 9
    assert {t["status"] for t in written["tars"]} == {"done"}
    assert any(e.message.startswith("total requests: ") for e in events)
    assert any(w["samples"] > 0 and w["realtime_factor"] > 0 for w in written["workers"])

    # A completed run, rerun, does nothing and starts no worker.
    again = Supervisor(cfg)
    summary2 = await _run(again)
    assert summary2.exit_code == 0 and summary2.tars_skipped == 9 and summary2.tars_done == 0
    assert all(w.pid is None and w.restarts == 0 for w in again.snapshot().workers)
    _assert_exactly_once(out, good)


# ---------------------------------------------------------------- supervisor killed, rerun

_SUPERVISOR_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from tartok_tui.config import RunConfig
    from tartok_tui.supervisor.signals import install_signal_handlers
    from tartok_tui.supervisor.supervisor import Supervisor
    inp, out, model = sys.argv[1:4]
    cfg = RunConfig(input_dir=Path(inp), output_dir=Path(out), model_dir=model, num_proc=2,
                    device="cpu", worker_env={"TARTOK_FAULT_INJECT": "slow_ms=150"})
    async def main():
        sup = Supervisor(cfg)
        install_signal_handlers(sup)
        return (await sup.run()).exit_code
    sys.exit(asyncio.run(main()))
    """
)


def _start_supervisor(inp: Path, out: Path, model_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _SUPERVISOR_SCRIPT, str(inp), str(out), str(model_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _wait_first_commit(proc: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 120
    while not list(out.glob("*.jsonl")):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no tar committed in time"
        await asyncio.sleep(0.05)


async def test_ctrl_c_stops_a_headless_run_gracefully_with_exit_130(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    _good_tars(inp, n_tars=6, n_samples=6)
    proc = _start_supervisor(inp, out, model_dir)
    try:
        await _wait_first_commit(proc, out)
        workers = psutil.Process(proc.pid).children()
        proc.send_signal(signal.SIGINT)
        rc = await asyncio.to_thread(proc.wait, 60)
        assert rc == 130, proc.stderr.read().decode()
        _, alive = psutil.wait_procs(workers, timeout=5)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = json.loads(summary_path(out).read_text())
    assert summary["exit_code"] == 130 and summary["tars_unfinished"] > 0
    for tar in summary["tars"]:
        assert (out / tar["tar"]).with_suffix(".jsonl").exists() == (tar["status"] == "done")
    # Aborted tars were dropped cleanly: no partial file is left behind.
    assert not [p for p in (out / ".partial").rglob("*") if p.is_file()]


async def test_a_killed_supervisor_leaves_no_orphans_and_the_rerun_completes_exactly_once(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _good_tars(inp, n_tars=6, n_samples=6)
    proc = _start_supervisor(inp, out, model_dir)
    try:
        # Kill it once the first tar is committed, so the run is really mid-way.
        await _wait_first_commit(proc, out)
        workers = psutil.Process(proc.pid).children()
        assert workers
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"orphan workers: {[p.pid for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()
    done_before = len(list(out.glob("*.jsonl")))
    assert done_before < 6

    sup = Supervisor(_config(inp, out, model_dir))
    summary = await _run(sup)
    assert summary.exit_code == 0, summary.exit_reason
    assert summary.tars_skipped == done_before and summary.tars_done == 6 - done_before
    _assert_exactly_once(out, good)


# ---------------------------------------------------------------- crash loop and load failures


async def test_a_model_that_fails_to_load_makes_every_slot_fatal_quickly(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    _good_tars(inp, n_tars=1, n_samples=2)
    cfg = _config(inp, out, model_dir, worker_env={"TARTOK_FAULT_INJECT": "load_fail"})
    started = time.monotonic()
    summary = await _run(Supervisor(cfg), timeout=120)
    assert summary.exit_code == 3
    assert (
        "model load failed" in summary.exit_reason
        and "injected load failure" in summary.exit_reason
    )
    assert time.monotonic() - started < 90
    assert summary.tars_unfinished == 1


async def test_a_worker_that_keeps_crashing_makes_its_slot_fatal_with_the_reason(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    _good_tars(inp, n_tars=2, n_samples=3)
    cfg = _config(
        inp,
        out,
        model_dir,
        num_proc=1,
        crash_limit=2,
        poison_threshold=5,
        worker_env={"TARTOK_FAULT_INJECT": "kill_after=1"},
    )
    sup = Supervisor(cfg)
    summary = await _run(sup, timeout=180)
    assert summary.exit_code == 3
    assert "crash loop: 2 failures" in summary.exit_reason and "SIGKILL" in summary.exit_reason
    worker = sup.snapshot().workers[0]
    assert worker.state == WorkerState.FATAL and "crash loop" in worker.last_error
    assert not list(out.glob("*.jsonl"))


# ---------------------------------------------------------------- poison tar


async def test_a_sample_that_kills_workers_is_isolated_and_gets_an_error_record(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _good_tars(inp, n_tars=2, n_samples=5)
    poison = sorted(k for k in good if "B00001" in k)[2]
    del good[poison]
    # Alongside: a tar whose error file cannot be written fails alone, and the run goes on.
    unwritable = write_emilia_tar(
        inp / "EN-B000002.tar",
        3,
        seed=2,
        batch=2,
        audio_format="flac",
        min_s=1.0,
        max_s=2.0,
        broken={1: "bad_json"},
    )
    (out / "errors" / "EN-B000002.jsonl").mkdir(parents=True)
    cfg = _config(
        inp,
        out,
        model_dir,
        num_proc=1,
        crash_limit=10,
        poison_threshold=2,
        worker_env={"TARTOK_FAULT_INJECT": f"kill_on_key={poison}"},
    )
    # And a listed tar that vanished before its turn fails without an output of its own.
    listed = [*sorted(inp.glob("*.tar")), inp / "EN-B000009.tar"]
    summary = await _run(Supervisor(cfg, tars=listed), timeout=240)
    assert summary.exit_code == 1, summary.exit_reason
    assert summary.exit_reason == "2 tars failed, 0 unfinished"
    _assert_exactly_once(out, good)
    _, errors = _read_outputs(out)
    assert [(e["key"], e["stage"]) for e in errors["EN-B000001"]] == [(poison, "worker_crash")]
    tars = {t.tar: t for t in summary.tars}
    assert tars["EN-B000001.tar"].isolated and tars["EN-B000001.tar"].worker_kills == 3
    assert tars["EN-B000002.tar"].status == "failed" and "Error" in tars["EN-B000002.tar"].reason
    assert not any(s.key in _read_outputs(out)[0] for s in unwritable)
    vanished = tars["EN-B000009.tar"]
    assert vanished.status == "failed" and "FileNotFoundError" in vanished.reason
    assert (
        not (out / "EN-B000009.jsonl").exists()
        and not (out / "errors" / "EN-B000009.jsonl").exists()
    )
    assert not list((out / ".partial" / "journal").glob("*.journal"))


async def test_isolation_follows_the_tar_to_another_slot_and_redoes_nothing_decided(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _good_tars(inp, n_tars=2, n_samples=5)
    order = [s.key for s in iter_samples(inp / "EN-B000000.tar") if isinstance(s, Sample)]
    poison = order[2]
    del good[poison]
    cfg = _config(
        inp,
        out,
        model_dir,
        num_proc=2,
        crash_limit=10,
        poison_threshold=1,
        worker_env={"TARTOK_FAULT_INJECT": f"kill_on_key={poison}"},
    )
    seen: list[tuple[int, int | None, m.Message]] = []
    events: list[Event] = []

    class Watched(Supervisor):
        """The real supervisor; the test reads the isolation messages it gets."""

        def _handle(self, slot, msg: m.Message) -> None:
            if isinstance(msg, (m.IsolationBegin, m.IsolationDone)):
                seen.append((slot.n, slot.process.pid if slot.process else None, msg))
            super()._handle(slot, msg)

    def on_event(event: Event) -> None:
        events.append(event)
        loop = asyncio.get_running_loop()
        # The slot whose worker died mid-isolation holds still (paused) until the tar is
        # done: the tar can only be finished by the other slot, from the journal.
        if "killed its worker: recorded as worker_crash" in event.message:
            loop.call_soon(sup.pause, event.slot)
        elif "EN-B000000.tar done" in event.message:
            for w in sup.snapshot().workers:
                loop.call_soon(sup.resume, w.slot)

    sup = Watched(cfg, on_event=on_event)
    summary = await _run(sup, timeout=280)

    assert summary.exit_code == 0, summary.exit_reason
    _assert_exactly_once(out, good)
    _, errors = _read_outputs(out)
    assert [(e["key"], e["stage"]) for e in errors["EN-B000000"]] == [(poison, "worker_crash")]
    begun = [(slot, pid, msg.key) for slot, pid, msg in seen if isinstance(msg, m.IsolationBegin)]
    # Each sample was begun in isolation once: the two before the poison by the worker that
    # died in it, the rest by another slot's worker, which redid nothing.
    assert [key for _, _, key in begun] == order, begun
    died_in = next((slot, pid) for slot, pid, key in begun if key == poison)
    after = {(slot, pid) for slot, pid, key in begun if key in order[3:]}
    assert [(slot, pid) for slot, pid, key in begun if key in order[:2]] == [died_in] * 2
    assert len(after) == 1 and next(iter(after))[0] != died_in[0]
    done = [msg.key for _, _, msg in seen if isinstance(msg, m.IsolationDone)]
    assert done == [k for k in order if k != poison]
    assert any("3 samples decided earlier (1 killed a worker)" in e.message for e in events)
    tar = {t.tar: t for t in summary.tars}["EN-B000000.tar"]
    assert tar.isolated and tar.worker_kills == 2
    assert not list((out / ".partial" / "journal").rglob("*.journal"))


# ---------------------------------------------------------------- memory


async def test_a_tiny_memory_limit_cleans_up_then_recycles_without_losing_samples(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    # In subdirectories (a recursive run): outputs mirror the input tree.
    good = _good_tars(inp / "EN", n_tars=2, n_samples=6)
    good.update(_good_tars(inp / "ZH", n_tars=1, n_samples=6, first_batch=5))
    events: list[Event] = []
    cfg = _config(
        inp,
        out,
        model_dir,
        recursive=True,
        num_proc=1,
        memory_limit_gb=0.001,
        memory_check_s=0.3,
        worker_env={"TARTOK_FAULT_INJECT": "slow_ms=150"},
    )
    sup = Supervisor(cfg, on_event=events.append)
    seen: list[tuple[int, int]] = []

    async def watch() -> None:
        while True:
            view = sup.snapshot()
            seen.append((view.memory_bytes, max((w.rss_bytes for w in view.workers), default=0)))
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    summary = await _run(sup)
    watcher.cancel()
    assert summary.exit_code == 0, summary.exit_reason
    # A worker with torch loaded uses far more than 50 MB; the total is the workers' sum.
    assert max(total for total, _ in seen) > 50 * 2**20
    assert max(rss for _, rss in seen) > 50 * 2**20
    messages = [e.message for e in events]
    cleanup = next(i for i, msg in enumerate(messages) if "asking all to free memory" in msg)
    recycle = next(i for i, msg in enumerate(messages) if "recycling this worker" in msg)
    assert cleanup < recycle
    assert summary.worker_restarts >= 1
    assert sorted(t.tar for t in summary.tars) == [
        "EN/EN-B000000.tar",
        "EN/EN-B000001.tar",
        "ZH/EN-B000005.tar",
    ]
    assert (out / "ZH" / "EN-B000005.jsonl").exists()
    _assert_exactly_once(out, good)


# ---------------------------------------------------------------- controls


async def test_pause_resume_restart_kill_and_stop_show_in_the_worker_state(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _good_tars(inp, n_tars=8, n_samples=6)
    cfg = _config(
        inp,
        out,
        model_dir,
        num_proc=1,
        threads_per_worker=2,
        streams=2,  # pause and stop wait for the batches in flight
        crash_limit=2,
        worker_env={"TARTOK_FAULT_INJECT": "slow_ms=150"},
    )
    sup = Supervisor(cfg)
    run = asyncio.create_task(_run(sup))

    def worker():
        return sup.snapshot().workers[0] if sup.snapshot().workers else None

    await _wait_for(
        lambda: worker() is not None and worker().state == WorkerState.RUNNING, 90, "running"
    )
    await _wait_for(lambda: worker().tar_samples_expected == 6, 10, "the tar's sample count")
    sup.pause(0)
    # "pausing" until the worker acknowledges; "paused" only once no batch runs.
    assert worker().state == WorkerState.PAUSING
    await _wait_for(lambda: worker().state == WorkerState.PAUSED, 10, "the worker to pause")
    done_at_pause = worker().samples_done
    await asyncio.sleep(1.0)
    assert worker().samples_done == done_at_pause  # no batch while paused
    sup.resume(0)
    await _wait_for(lambda: worker().samples_done > done_at_pause, 10, "progress after resume")
    assert worker().state == WorkerState.RUNNING
    sup.pause_all()
    await _wait_for(lambda: worker().state == WorkerState.PAUSED, 10, "pause_all")
    sup.resume_all()
    await _wait_for(lambda: worker().state != WorkerState.PAUSED, 10, "resume_all")
    assert worker().state in (WorkerState.RUNNING, WorkerState.IDLE)

    pid = worker().pid
    sup.restart(0)
    await _wait_for(
        lambda: worker().pid not in (None, pid) and worker().state == WorkerState.RUNNING,
        90,
        "a fresh worker after restart",
    )
    assert worker().restarts == 1

    pid = worker().pid
    sup.kill(0)
    await _wait_for(
        lambda: worker().pid not in (None, pid) and worker().state == WorkerState.RUNNING,
        90,
        "a fresh worker after kill",
    )
    assert worker().restarts == 2
    assert sup._slots[0].policy.failures_in_window(time.monotonic()) == 0  # user kills do not count

    await _wait_for(lambda: worker().tar is not None, 10, "a tar in progress")
    tar_at_stop = worker().tar
    sup.stop(0)
    assert worker().state == WorkerState.STOPPING
    summary = await run
    # The tar in progress was finished and committed, and nothing after it was started.
    assert {t.tar: t.status for t in summary.tars}[tar_at_stop] == "done"
    assert summary.tars_done + summary.tars_unfinished == 8
    assert worker().state == WorkerState.DONE and worker().pid is None
    assert summary.exit_code == 1 and summary.tars_unfinished >= 1  # stopped with tars left
    keys, _ = _read_outputs(out)
    assert set(keys) <= set(good) and max(keys.values()) == 1


async def test_request_stop_aborts_and_a_second_request_kills(
    tmp_path: Path, model_dir: Path
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    _good_tars(inp, n_tars=4, n_samples=6)
    # Each model stage sleeps 2 s: a batch takes ~40 s, and a worker honours an abort only
    # between batches. So the first request alone cannot end the run for tens of seconds
    # (and its forced kill is 300 s away): only the second request can meet the deadline.
    cfg = _config(
        inp,
        out,
        model_dir,
        stop_timeout_s=300,
        worker_env={"TARTOK_FAULT_INJECT": "slow_stage_ms=2000"},
    )
    events: list[Event] = []
    sup = Supervisor(cfg, on_event=events.append)
    run = asyncio.create_task(_run(sup))
    await _wait_for(
        lambda: any(w.state == WorkerState.RUNNING and w.progress_age_s is not None
                    and w.progress_age_s > 0.5 for w in sup.snapshot().workers),
        120,
        "a worker inside a batch",
    )  # fmt: skip
    sup.request_stop()
    assert sup.snapshot().stopping
    await asyncio.sleep(3)
    assert not run.done()  # the first request waits for the batch in progress
    sup.request_stop()  # the second does not
    started = time.monotonic()
    summary = await run
    assert time.monotonic() - started < 10
    assert any("forced stop: killing every worker" in e.message for e in events)
    assert summary.exit_code == 130
    assert summary.tars_unfinished >= 1
    for tar in summary.tars:
        assert (out / tar.tar).with_suffix(".jsonl").exists() == (tar.status == "done")


# ---------------------------------------------------------------- bad arguments


def test_bad_arguments_are_config_errors_before_any_worker(tmp_path: Path, model_dir: Path) -> None:
    inp = tmp_path / "in"
    _good_tars(inp, n_tars=2, n_samples=1)
    with pytest.raises(ConfigError, match="does not exist"):
        validate(_config(tmp_path / "missing", tmp_path / "out", model_dir))
    with pytest.raises(ConfigError, match="no tars"):
        validate(_config(inp, tmp_path / "out", model_dir, from_index=5))
    incomplete = tmp_path / "incomplete-model"
    incomplete.mkdir()
    (incomplete / "config.yaml").write_text("sample_rate: 16000\n")
    with pytest.raises(ConfigError, match="model dir"):
        validate(_config(inp, tmp_path / "out", incomplete))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="not writable"):
        validate(_config(inp, blocker / "out", model_dir))
    with pytest.raises(ConfigError, match="precision"):
        validate(_config(inp, tmp_path / "out", model_dir, precision="int4"))
    ok = validate(_config(inp, tmp_path / "out", model_dir))
    assert [p.name for p in ok.tars] == ["EN-B000000.tar", "EN-B000001.tar"]


async def test_streams_write_the_same_bytes_as_one_stream_bad_samples_included(
    tmp_path: Path, model_dir: Path
) -> None:
    inp = tmp_path / "in"
    _good_tars(inp, n_tars=2, n_samples=7)
    write_emilia_tar(
        inp / "EN-B000100.tar",
        8,
        seed=100,
        batch=100,
        audio_format="flac",
        min_s=0.5,
        max_s=3.0,
        broken={1: "undecodable_audio", 4: "too_long", 6: "empty_audio"},
        too_long_s=4.0,
    )
    outputs = {}
    for streams in (1, 3):
        out = tmp_path / f"out-{streams}"
        cfg = _config(
            inp, out, model_dir, num_proc=1, threads_per_worker=2, streams=streams, max_duration=3.5
        )
        summary = await _run(Supervisor(cfg))
        assert summary.exit_code == 0 and summary.tars_done == 3
        outputs[streams] = {
            str(p.relative_to(out)): p.read_bytes()
            for p in sorted(out.rglob("*.jsonl"))
            if p.relative_to(out).parts[0] not in (".partial", "logs")
        }
    assert len(outputs[1]) == 4  # three tars and one errors file
    assert outputs[3] == outputs[1]

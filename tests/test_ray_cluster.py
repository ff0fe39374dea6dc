"""Cluster mode on a simulated Ray cluster (one machine, loopback only): a head without
CPUs and two worker nodes with one CPU and two logical GPUs each, shared by the module.

Real actors, real worker subprocesses, the tiny model on the CPU.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from ray_support import (
    NODE_ARGS,
    can_mount_privately,
    host_actor_processes,
    node_with_own_disk,
    start_cluster,
    wait_until,
    worker_processes,
)

from tartok_tui.config import RunConfig
from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.exit_codes import ExitCode
from tartok_tui.output.verify import verify
from tartok_tui.supervisor.process import NoResources, WorkerSpec, WorkerStartError
from tartok_tui.supervisor.ray_cluster import connect, disconnect, plan_cluster_slots
from tartok_tui.supervisor.ray_launcher import RayLauncher
from tartok_tui.supervisor.supervisor import Supervisor
from tartok_tui.supervisor.views import Event, RunView, WorkerState, WorkerView
from tartok_tui.worker.options import WorkerOptions

pytestmark = pytest.mark.timeout(420)

WORKER_NODE = {"num_cpus": 1, "num_gpus": 2}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    cluster = start_cluster(2, **WORKER_NODE)
    connect(cluster.address)
    yield cluster
    disconnect()
    cluster.shutdown()


def _tars(input_dir: Path, n_tars: int, n_samples: int, broken=None) -> set[str]:
    """Writes the tars; returns the keys of the good samples."""
    good = set()
    for t in range(n_tars):
        written = write_emilia_tar(
            input_dir / f"EN-B{t:06d}.tar", n_samples, seed=t, batch=t, audio_format="flac",
            min_s=1.0, max_s=2.0, broken=(broken or {}).get(t, {}),
        )  # fmt: skip
        good |= {s.key for s in written if s.broken is None}
    return good


def _config(cluster, tmp_path: Path, model_dir: Path, **kw) -> RunConfig:
    kw.setdefault("num_proc", 2)
    kw.setdefault("device", "cpu")
    kw.setdefault("threads_per_worker", 1)
    kw.setdefault("backoff_initial_s", 0.1)
    return RunConfig(
        input_dir=tmp_path / "in", output_dir=tmp_path / "out", model_dir=str(model_dir),
        ray_address=cluster.address, **kw,
    )  # fmt: skip


def _supervisor(config: RunConfig, events: list[Event]) -> tuple[Supervisor, RayLauncher]:
    launcher = RayLauncher(model_source=config.model_dir, place_wait_s=2.0)
    supervisor = Supervisor(config, on_event=events.append, launcher=launcher)
    launcher.bind(supervisor.report)
    return supervisor, launcher


async def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.1)


def _keys(output_dir: Path) -> Counter:
    keys: Counter = Counter()
    for path in output_dir.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            keys[json.loads(line)["key"]] += 1
    return keys


def _outputs(output_dir: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(output_dir)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in output_dir.rglob("*.jsonl")
        if "logs" not in p.parts
    }


def _message(events: list[Event], *parts: str) -> list[str]:
    return [e.message for e in events if all(p in e.message for p in parts)]


# ---------------------------------------------------------------- placement


async def test_gpu_shares_put_procs_per_gpu_workers_on_each_gpu_of_each_node(
    cluster, tmp_path: Path, tiny_model_dir: Path
) -> None:
    (tmp_path / "in").mkdir()
    config = _config(cluster, tmp_path, tiny_model_dir, device="auto", num_proc=None,
                     threads_per_worker=None, procs_per_gpu=2)  # fmt: skip
    placements = plan_cluster_slots(config)
    assert len(placements) == 8  # 2 nodes x 2 GPUs x 2 workers
    assert placements[0].resources == {"GPU": 0.5, "CPU": 0.25}  # 1 core shared by 4
    launcher = RayLauncher(place_wait_s=2.0)
    processes = []
    try:
        for p in placements:
            # The model itself runs on the CPU: the GPUs of these nodes are logical.
            options = WorkerOptions.for_slot(
                config, slot=p.slot, device="cpu", threads=1, model_dir=tiny_model_dir
            )
            spec = WorkerSpec(p.slot, options, dict(p.env), tmp_path / f"w{p.slot}.log",
                              dict(p.resources))  # fmt: skip
            processes.append(await launcher.start(spec))
        assert len(worker_processes(tmp_path)) == 8 and len(host_actor_processes()) >= 8
        visible = Counter(
            (proc.node, psutil.Process(proc.pid).environ()["CUDA_VISIBLE_DEVICES"])
            for proc in processes
        )
        nodes = {node for node, _ in visible}
        assert len(nodes) == 2
        assert visible == {(node, gpu): 2 for node in nodes for gpu in ("0", "1")}
        extra = WorkerSpec(8, options, {}, tmp_path / "w8.log", dict(placements[0].resources))
        with pytest.raises(NoResources, match=re.escape("no node has 0.5 GPU, 0.25 CPU free")):
            await launcher.start(extra)
    finally:
        for proc in processes:
            proc.kill()
        codes = [await proc.wait() for proc in processes]
        launcher.close()
    assert all(code == -signal.SIGKILL for code in codes)
    wait_until(lambda: not worker_processes(tmp_path), 30, "the workers to be gone")


async def test_a_path_a_node_cannot_use_is_an_error_naming_the_node_before_any_work(
    cluster, tmp_path: Path, tiny_model_dir: Path
) -> None:
    config = _config(cluster, tmp_path, tiny_model_dir)  # no input dir on any node
    options = WorkerOptions.for_slot(config, slot=0, device="cpu", threads=1,
                                     model_dir=tiny_model_dir)  # fmt: skip
    launcher = RayLauncher(place_wait_s=2.0)
    spec = WorkerSpec(0, options, {}, tmp_path / "w.log", {"CPU": 1.0})
    with pytest.raises(WorkerStartError) as caught:
        await launcher.start(spec)
    assert "cannot run on node" in str(caught.value)
    assert f"input dir {tmp_path / 'in'} is not readable" in str(caught.value)
    assert not worker_processes(tmp_path)
    launcher.close()


async def test_a_worker_whose_node_does_not_answer_a_kill_is_ended_through_ray(
    cluster, tmp_path: Path, tiny_model_dir: Path
) -> None:
    (tmp_path / "in").mkdir()
    config = _config(cluster, tmp_path, tiny_model_dir)
    options = WorkerOptions.for_slot(config, slot=0, device="cpu", threads=1,
                                     model_dir=tiny_model_dir)  # fmt: skip
    events: list[tuple] = []
    launcher = RayLauncher(report=lambda *event: events.append(event))
    process = await launcher.start(WorkerSpec(0, options, {}, tmp_path / "w.log", {"CPU": 1.0}))
    host = psutil.Process(process.pid).parent()
    assert host is not None and "ray::WorkerHost" in " ".join(host.cmdline())
    host.suspend()  # the relay frozen, as on a partitioned node
    process.kill()
    assert await asyncio.wait_for(process.wait(), 60) == -signal.SIGKILL
    assert any("did not answer the kill" in event[2] for event in events), events
    wait_until(lambda: not worker_processes(tmp_path) and not psutil.pid_exists(host.pid),
               30, "the worker and its host to be gone")  # fmt: skip
    launcher.close()


# ---------------------------------------------------------------- a node with its own disk


def _hold_cpus(ray, node_ids: list[str]) -> list:
    """An actor holding the one CPU of each of ``node_ids`` (so the next worker has to go
    elsewhere), placed before it returns."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=1)
    class Hold:
        def ready(self) -> bool:
            return True

    holders = [
        Hold.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
        for n in node_ids
    ]
    ray.get([h.ready.remote() for h in holders], timeout=60)
    return holders


@pytest.mark.skipif(not can_mount_privately(), reason="needs unshare --user --mount")
async def test_a_node_whose_output_path_is_a_disk_of_its_own_is_refused_by_name(
    cluster, tmp_path: Path, tiny_model_dir: Path
) -> None:
    import ray

    good = _tars(tmp_path / "in", n_tars=4, n_samples=3)
    data, own = tmp_path / "data", tmp_path / "node-disk"
    data.mkdir()
    own.mkdir()
    config = replace(_config(cluster, tmp_path, tiny_model_dir, num_proc=3),
                     output_dir=data / "tokens")  # fmt: skip
    # A third node (one CPU each: a worker per node) sees its own disk at .../data.
    with node_with_own_disk(cluster, own, data, **WORKER_NODE) as node_id:
        label = f"/{node_id[:6]}"
        events: list[Event] = []
        supervisor, launcher = _supervisor(config, events)
        summary = await asyncio.wait_for(supervisor.run(), 300)
        launcher.close()
        workers = supervisor.snapshot().workers

        # Every worker refused: the run says the output is not shared.
        others = [n["NodeID"] for n in ray.nodes()
                  if n["Alive"] and n["Resources"].get("CPU") and n["NodeID"] != node_id]  # fmt: skip
        holders = _hold_cpus(ray, others)
        (tmp_path / "in2").mkdir()
        write_emilia_tar(tmp_path / "in2" / "EN-B000000.tar", 2, seed=9, min_s=1.0, max_s=1.5)
        alone = replace(config, input_dir=tmp_path / "in2", output_dir=data / "tokens2", num_proc=1)
        refused_events: list[Event] = []
        refused, launcher = _supervisor(alone, refused_events)
        refused_summary = await asyncio.wait_for(refused.run(), 120)
        launcher.close()
        for holder in holders:
            ray.kill(holder)

    assert summary.exit_code == ExitCode.OK, summary.exit_reason
    fatal = [w for w in workers if w.state == WorkerState.FATAL]
    assert len(fatal) == 1
    refusals = _message(events, "slot is FATAL: could not start the worker: cannot run on node",
                        label, f"output {data / 'tokens'} is not shared with the driver",
                        "the check file logs/.shared-output-")  # fmt: skip
    assert len(refusals) == 1, [e.message for e in events]
    assert fatal[0].tars_done == 0 and sum(w.tars_done for w in workers) == 4
    keys = _keys(data / "tokens")
    assert set(keys) == good and max(keys.values()) == 1
    assert verify(tmp_path / "in", data / "tokens").ok
    assert not list((data / "tokens" / "logs").glob(".shared-output-*"))  # removed at the end
    # Nothing reached the node's own disk (the path check made only the empty directory).
    assert [p for p in own.rglob("*") if p.is_file()] == []

    assert refused_summary.exit_code == ExitCode.ALL_FATAL
    assert "every worker slot is fatal" in refused_summary.exit_reason
    assert f"output {data / 'tokens2'} is not shared with the driver" in refused_summary.exit_reason
    assert label in refused_summary.exit_reason
    assert not list((data / "tokens2").glob("*.jsonl"))
    wait_until(lambda: not worker_processes(tmp_path), 30, "every worker to be gone")


# ---------------------------------------------------------------- losing and gaining nodes


def _cluster_node(cluster, label: str):
    suffix = label.rsplit("/", 1)[1]
    return next(n for n in cluster.worker_nodes if n.node_id.startswith(suffix))


async def test_lost_nodes_never_count_against_a_tar_and_a_node_that_joins_later_is_used(
    cluster, tmp_path: Path, tiny_model_dir: Path
) -> None:
    broken = {1: {2: "undecodable_audio"}, 4: {0: "bad_json"}}
    good = _tars(tmp_path / "in", n_tars=8, n_samples=4, broken=broken)
    # Poison threshold 1: a single loss counted as a crash would isolate the tar, and a
    # second one would record the sample it was in as a worker_crash.
    config = _config(cluster, tmp_path, tiny_model_dir, poison_threshold=1,
                     worker_env={"TARTOK_FAULT_INJECT": "slow_ms=1500"})  # fmt: skip
    events: list[Event] = []
    supervisor, launcher = _supervisor(config, events)
    run = asyncio.create_task(supervisor.run())

    def view() -> RunView:
        return supervisor.snapshot()

    await _until(
        lambda: [w.state for w in view().workers] == [WorkerState.RUNNING] * 2,
        180, "both workers on a tar",
    )  # fmt: skip
    victim, survivor = view().workers
    assert victim.node != survivor.node  # one CPU per node
    held: str | None = None

    def on_node(label: str, tar: str | None) -> bool:
        worker = view().workers[victim.slot]
        return label in worker.node and worker.tar == tar

    # The survivor holds still, so only nodes that join can go on with the work.
    supervisor.pause(survivor.slot)
    lost_nodes = []
    for loss in (1, 2):
        # Lose the node while its worker holds the same tar: the first time the tar the
        # worker had from the start, the second time that tar again, on the node that
        # joined. (Cluster calls block; they install signal handlers: not from a thread.)
        worker = view().workers[victim.slot]
        assert worker.state == WorkerState.RUNNING and worker.tar is not None, worker
        assert held in (None, worker.tar), worker
        held = worker.tar
        lost_nodes.append(worker.node)
        cluster.remove_node(_cluster_node(cluster, worker.node), allow_graceful=False)
        await _until(lambda: view().workers[victim.slot].state == WorkerState.PENDING, 120,
                     f"the lost worker's slot to wait for resources ({loss})")  # fmt: skip
        assert _message(events, held, "back in the queue, not counted against it")
        assert not psutil.pid_exists(worker.pid) or psutil.Process(worker.pid).status() == "zombie"
        fresh = cluster.add_node(**NODE_ARGS, **WORKER_NODE)
        fresh_label = f"/{fresh.node_id[:6]}"
        await _until(lambda label=fresh_label, tar=held: on_node(label, tar), 120,
                     f"the lost tar on the node that joined ({loss})")  # fmt: skip
    supervisor.resume(survivor.slot)
    summary = await asyncio.wait_for(run, 300)
    launcher.close()

    assert summary.exit_code == 0, summary.exit_reason
    for node in lost_nodes:
        assert _message(events, "worker on node", node, "lost: its node died")
        assert _message(events, "node", node, "lost")
    assert len(_message(events, held, "back in the queue, not counted against it")) == 2
    assert _message(events, "pending: no node has 1 CPU free")
    assert _message(events, "node", fresh_label, "joined")
    assert _message(events, "worker started", fresh_label)
    assert not _message(events, "sample by sample") and not _message(events, "killed its worker")
    tars = {t.tar: t for t in summary.tars}
    assert all(t.worker_kills == 0 and not t.isolated for t in tars.values()), summary.tars
    keys = _keys(tmp_path / "out")
    assert set(keys) == good and max(keys.values()) == 1
    report = verify(tmp_path / "in", tmp_path / "out")
    assert report.ok and report.samples_expected == 32  # the 2 bad ones as error records
    errors = sorted(p.name for p in (tmp_path / "out" / "errors").glob("*.jsonl"))
    assert errors == ["EN-B000001.jsonl", "EN-B000004.jsonl"]
    stages = {e["stage"] for path in (tmp_path / "out" / "errors").glob("*.jsonl")
              for e in map(json.loads, path.read_text().splitlines())}  # fmt: skip
    assert stages == {"decode", "sample"}  # no worker_crash

    before = _outputs(tmp_path / "out")
    again: list[Event] = []
    supervisor, launcher = _supervisor(config, again)
    summary = await asyncio.wait_for(supervisor.run(), 120)
    launcher.close()
    assert summary.exit_code == 0
    assert _message(again, "8 tars, 8 already done, 0 to process")
    assert _outputs(tmp_path / "out") == before
    wait_until(lambda: not worker_processes(tmp_path), 30, "every worker to be gone")


# ---------------------------------------------------------------- stalls


async def test_a_frozen_worker_on_a_node_is_killed_and_replaced(
    cluster, tmp_path: Path, tiny_model_dir: Path
) -> None:
    good = _tars(tmp_path / "in", n_tars=4, n_samples=6)
    config = _config(cluster, tmp_path, tiny_model_dir, stall_timeout_s=8.0,
                     worker_env={"TARTOK_FAULT_INJECT": "slow_ms=300"})  # fmt: skip
    events: list[Event] = []
    supervisor, launcher = _supervisor(config, events)
    run = asyncio.create_task(supervisor.run())

    def first() -> WorkerView | None:
        workers = supervisor.snapshot().workers
        return workers[0] if workers else None

    frozen = None
    while frozen is None:
        await _until(lambda: (w := first()) is not None and w.state == WorkerState.RUNNING,
                     180, "a worker on a tar")  # fmt: skip
        pid = supervisor.snapshot().workers[0].pid
        os.kill(pid, signal.SIGSTOP)  # as a hung device call or NFS read looks from outside
        await asyncio.sleep(0.5)
        if supervisor.snapshot().workers[0].tar is not None:
            frozen = pid
        else:  # its tar ended just before: freeze it on its next one
            os.kill(pid, signal.SIGCONT)
    summary = await asyncio.wait_for(run, 300)
    launcher.close()
    assert summary.exit_code == 0, summary.exit_reason
    assert _message(events, "stalled: no progress for")
    assert not psutil.pid_exists(frozen) or psutil.Process(frozen).status() == "zombie"
    keys = _keys(tmp_path / "out")
    assert set(keys) == good and max(keys.values()) == 1
    wait_until(lambda: not worker_processes(tmp_path), 30, "every worker to be gone")


# ---------------------------------------------------------------- the driver going away


class Driver:
    """`tartok-tui run --no-tui` against the cluster, its output read as it comes."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tartok_tui", *args], cwd=REPO, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code


def test_ctrl_c_or_a_killed_driver_leaves_no_worker_and_the_same_command_resumes(
    cluster, tmp_path: Path, tiny_model_dir: Path
) -> None:
    good = _tars(tmp_path / "in", n_tars=6, n_samples=4)
    args = ["run", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
            "-m", str(tiny_model_dir), "--ray-address", cluster.address, "--device", "cpu",
            "--num-proc", "2", "--threads-per-worker", "1", "--no-tui",
            "--progress-interval", "1"]  # fmt: skip
    slow = ["--worker-env", "TARTOK_FAULT_INJECT=slow_ms=400"]

    def loaded(driver: Driver) -> bool:
        return driver.text().count("model loaded") >= 2 or driver.proc.poll() is not None

    def nothing_left() -> bool:
        return not worker_processes(tmp_path) and not host_actor_processes()

    interrupted = Driver([*args, *slow])
    wait_until(lambda: loaded(interrupted), 180, "both workers to load")
    assert len(worker_processes(tmp_path)) == 2 and host_actor_processes(), interrupted.text()
    interrupted.proc.send_signal(signal.SIGINT)
    assert interrupted.finish(120) == 130, interrupted.text()
    wait_until(nothing_left, 60, "the workers and their actors to be gone after Ctrl-C")

    killed = Driver([*args, *slow])
    wait_until(lambda: loaded(killed), 180, "both workers to load")
    assert len(worker_processes(tmp_path)) == 2 and host_actor_processes(), killed.text()
    killed.proc.kill()
    killed.finish(30)
    wait_until(nothing_left, 120, "Ray to end the dead driver's actors and their workers")

    resumed = Driver(args)
    assert resumed.finish(300) == 0, resumed.text()
    assert "Run finished: all tars done (exit code 0)" in resumed.text()
    keys = _keys(tmp_path / "out")
    assert set(keys) == good and max(keys.values()) == 1
    assert verify(tmp_path / "in", tmp_path / "out").ok
    wait_until(nothing_left, 60, "every worker to be gone")

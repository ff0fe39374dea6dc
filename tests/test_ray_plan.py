"""Cluster mode without a cluster: slot planning, node checks, the per-node memory limit,
and the command line's behaviour when Ray is absent, unreachable or not asked for."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_supervisor import RecordingControls
from ray_support import LOOPBACK_ENV

from tartok_tui.config import ConfigError, RunConfig
from tartok_tui.supervisor.memory import MemoryWatch, TreeMemory
from tartok_tui.supervisor.ray_cluster import NodeInfo, node_loss, parse_host_port, plan_cluster
from tartok_tui.supervisor.ray_host import open_log, prepare_node
from tartok_tui.worker.options import WorkerOptions

REPO = Path(__file__).resolve().parents[1]


def _config(**kw) -> RunConfig:
    return RunConfig(
        input_dir=Path("in"), output_dir=Path("out"), model_dir="m", ray_address="auto", **kw
    )


def _node(n: int, cpus: float, gpus: float = 0.0) -> NodeInfo:
    return NodeInfo(f"{n:02d}" + "ab" * 27, f"host{n}", f"10.0.0.{n}", cpus, gpus)


# ---------------------------------------------------------------- planning


def test_gpu_workers_are_procs_per_gpu_over_every_gpu_of_the_cluster() -> None:
    nodes = [_node(0, 0), _node(1, 8, 2), _node(2, 8, 2)]  # a head without CPUs
    plan = plan_cluster(_config(procs_per_gpu=2), nodes)
    assert len(plan) == 8
    assert {p.device for p in plan} == {"gpu"} and {p.worker_device for p in plan} == {"cuda:0"}
    # Each asks half a GPU and its share of the node's cores: 8 CPUs / 4 workers.
    assert all(p.resources == {"GPU": 0.5, "CPU": 2.0} for p in plan)
    assert all(p.threads == 2 and p.env["OMP_NUM_THREADS"] == "2" for p in plan)
    assert all(p.gpu_sharers == 2 for p in plan)  # Ray puts up to two halves on a GPU


def test_gpu_shares_fit_whole_gpus_and_the_scarcest_node_sets_the_cores() -> None:
    nodes = [_node(1, 16, 4), _node(2, 6, 2)]  # the second node: 1 core per worker
    plan = plan_cluster(_config(procs_per_gpu=3), nodes)
    assert len(plan) == 18
    share = plan[0].resources["GPU"]
    assert share == pytest.approx(0.3333) and 3 * share <= 1.0
    assert plan[0].resources["CPU"] == 1.0 and plan[0].threads == 1


def test_gpu_nodes_with_fewer_cores_than_workers_ask_for_a_fraction_of_a_core() -> None:
    plan = plan_cluster(_config(procs_per_gpu=2), [_node(1, 2, 4)])
    assert len(plan) == 8
    assert plan[0].resources == {"GPU": 0.5, "CPU": 0.25} and plan[0].threads == 1


def test_num_proc_and_threads_per_worker_override_the_gpu_plan() -> None:
    plan = plan_cluster(_config(num_proc=3, threads_per_worker=4), [_node(1, 32, 2)])
    assert len(plan) == 3 and all(p.resources == {"GPU": 0.5, "CPU": 4.0} for p in plan)


def test_cpu_clusters_get_num_proc_workers_with_a_core_per_torch_thread() -> None:
    nodes = [_node(0, 0), _node(1, 16), _node(2, 8)]
    default = plan_cluster(_config(), nodes)
    assert len(default) == 6  # 4 threads each: 4 + 2 workers fit
    assert all(p.resources == {"CPU": 4.0} and p.device == "cpu" for p in default)
    sized = plan_cluster(_config(num_proc=12), nodes)
    assert len(sized) == 12 and all(p.threads == 2 for p in sized)  # 24 cores / 12
    one_each = plan_cluster(_config(num_proc=2, threads_per_worker=1), nodes)
    assert [p.resources for p in one_each] == [{"CPU": 1.0}, {"CPU": 1.0}]


def test_device_cpu_keeps_a_gpu_cluster_on_cores() -> None:
    plan = plan_cluster(_config(device="cpu", num_proc=2), [_node(1, 8, 2)])
    assert all(p.device == "cpu" and "GPU" not in p.resources for p in plan)


def test_a_cluster_still_without_worker_nodes_plans_one_pending_worker() -> None:
    plan = plan_cluster(_config(), [_node(0, 0)])
    assert len(plan) == 1 and plan[0].resources == {"CPU": 1.0}


@pytest.mark.parametrize(
    ("device", "nodes", "message"),
    [
        ("cuda", [_node(1, 8)], "has no GPU"),
        ("cuda:0", [_node(1, 8, 1)], "Ray assigns the GPUs"),
    ],
)
def test_device_choices_that_cannot_hold_on_the_cluster_are_config_errors(
    device: str, nodes: list[NodeInfo], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_cluster(_config(device=device), nodes)


def test_addresses_are_host_port_or_auto() -> None:
    assert parse_host_port("10.1.2.3:6379") == ("10.1.2.3", 6379)
    assert parse_host_port("[::1]:6379") == ("::1", 6379)
    assert parse_host_port("auto") is None
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_host_port("head-node")


# ---------------------------------------------------------------- node checks


def _options(tmp_path: Path, **kw) -> WorkerOptions:
    values = {
        "slot": 0,
        "device": "cpu",
        "model_dir": tmp_path / "model",
        "threads": 1,
        "output_dir": tmp_path / "out",
        "input_dir": tmp_path / "in",
    }
    values.update(kw)
    return WorkerOptions(**values)


class _Died(Exception):
    """Stands for ray.exceptions.ActorDiedError (``preempted`` as Ray sets it)."""

    def __init__(self, preempted: bool = False) -> None:
        self.preempted = preempted


def _ray_with_nodes(nodes) -> SimpleNamespace:
    def listing() -> list[dict]:
        if isinstance(nodes, Exception):
            raise nodes
        return nodes

    return SimpleNamespace(exceptions=SimpleNamespace(ActorDiedError=_Died), nodes=listing)


def test_a_worker_ends_with_its_node_only_when_ray_says_the_node_is_gone() -> None:
    here = {"NodeID": "n1", "Alive": True}
    dead = {"NodeID": "n1", "Alive": False, "DeathReasonMessage": "health check failed"}
    assert node_loss(_ray_with_nodes([here]), _Died(preempted=True), "n1") == (
        "its node was preempted"
    )
    assert node_loss(_ray_with_nodes([dead]), _Died(), "n1") == (
        "its node died (health check failed)"
    )
    assert node_loss(_ray_with_nodes([]), RuntimeError("any Ray error"), "n1") == (
        "its node left the cluster"
    )
    # The node lives: the actor or its worker died on its own, a crash like any other; and
    # when the head cannot say, the end counts as a crash too.
    assert (
        node_loss(_ray_with_nodes([here, {"NodeID": "n2", "Alive": False}]), _Died(), "n1") is None
    )
    assert node_loss(_ray_with_nodes(ConnectionError("head gone")), _Died(), "n1") is None


def test_a_node_reports_every_path_it_cannot_use(tmp_path: Path, tiny_model_dir: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    options = _options(tmp_path, output_dir=blocker / "out")
    _, problems = prepare_node(options, None)
    assert problems == [
        f"input dir {tmp_path / 'in'} is not readable",
        f"output dir {blocker / 'out'} is not writable",
        f"model dir {tmp_path / 'model'} is not readable (no config.yaml)",
    ]
    (tmp_path / "in").mkdir()
    good = _options(tmp_path, model_dir=tiny_model_dir)
    assert prepare_node(good, str(tiny_model_dir)) == (good, [])


def _prepare_on_a_node(options: WorkerOptions, hf_home: Path) -> tuple[str, str]:
    """prepare_node in a process of its own: the Hub cache's location is read when
    huggingface_hub is imported. Returns (model dir, problems) as printed."""
    code = (
        "import sys; from tartok_tui.worker.options import WorkerOptions; "
        "from tartok_tui.supervisor.ray_host import prepare_node; "
        "o, p = prepare_node(WorkerOptions.from_json(sys.argv[1]), 'SparkAudio/Spark-TTS-0.5B'); "
        "print(o.model_dir); print(p)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)}
    out = subprocess.run([sys.executable, "-c", code, options.to_json()], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    model_dir, problems = out.stdout.splitlines()
    return model_dir, problems


def test_a_hub_model_comes_from_each_nodes_own_cache_or_is_named(
    tmp_path: Path, tiny_model_dir
) -> None:
    (tmp_path / "in").mkdir()
    # The supervisor's copy is in its own cache, at a path this node does not have.
    options = _options(tmp_path, model_dir=tmp_path / "driver-cache" / "snapshot")
    _, problems = _prepare_on_a_node(options, tmp_path / "empty-hf")
    assert "model SparkAudio/Spark-TTS-0.5B: cannot get" in problems
    hub = tmp_path / "hf" / "hub" / "models--SparkAudio--Spark-TTS-0.5B"
    shutil.copytree(tiny_model_dir, hub / "snapshots" / "rev1")
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text("rev1")
    assert _prepare_on_a_node(options, tmp_path / "hf") == (str(hub / "snapshots" / "rev1"), "[]")


def test_a_log_dir_the_node_cannot_write_falls_back_to_its_temp_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    log, where = open_log(blocker / "logs" / "worker-7.log", "header\n")
    with log:
        pass
    assert where.name == "worker-7.log" and where.parent.name == "tartok-tui-logs"
    assert where.read_text().endswith("header\n")


# ---------------------------------------------------------------- memory per node


class Worker:
    def __init__(self, n: int, node: str, rss: int) -> None:
        self.n, self.node, self.rss = n, node, rss
        self.mem_bytes = 0
        self.recyclable = True

    async def measure(self, pss: bool) -> TreeMemory | None:
        return TreeMemory(rss=self.rss, pss=self.rss if pss else None)


def test_the_memory_limit_holds_per_node_and_recycles_the_biggest_worker_of_that_node() -> None:
    controls = RecordingControls()
    watch = MemoryWatch(limit_bytes=100, controls=controls)
    # Node a is over (60 + 70); node b holds the biggest worker but is under its limit.
    workers = [Worker(0, "a", 60), Worker(1, "a", 70), Worker(2, "b", 90)]
    asyncio.run(watch.check(workers, now=0.0))
    assert ("cleanup_all",) in controls.calls
    assert any("node a:" in c[3] for c in controls.calls if c[0] == "report")
    assert watch.node_bytes == {"a": 130, "b": 90} and watch.total_bytes == 220
    controls.calls.clear()
    asyncio.run(watch.check(workers, now=1.0))
    assert ("recycle", 1) in controls.calls  # a's biggest, not b's
    controls.calls.clear()
    asyncio.run(watch.check(workers, now=2.0))
    assert controls.calls == []  # one recycle per node at a time
    # Node b goes over on its own: its guard acts without waiting for a's recycle.
    workers[2].rss = 150
    asyncio.run(watch.check(workers, now=3.0))
    assert ("cleanup_all",) in controls.calls
    controls.calls.clear()
    asyncio.run(watch.check(workers, now=4.0))
    assert ("recycle", 2) in controls.calls
    # a's recycle finished: a may recycle again (cleanup first), b stays waiting.
    controls.calls.clear()
    watch.recycle_finished(1)
    asyncio.run(watch.check(workers, now=5.0))
    assert controls.calls.count(("cleanup_all",)) == 1
    assert not any(c[0] == "recycle" for c in controls.calls)


def test_a_node_without_workers_leaves_the_totals() -> None:
    watch = MemoryWatch(limit_bytes=1000, controls=RecordingControls())
    asyncio.run(watch.check([Worker(0, "a", 10), Worker(1, "b", 20)], now=0.0))
    asyncio.run(watch.check([Worker(1, "b", 20)], now=31.0))
    assert watch.node_bytes == {"b": 20}


# ---------------------------------------------------------------- the command line


RUN_CLI = textwrap.dedent(
    """
    import sys, time
    {prelude}
    from tartok_tui.cli import app
    started = time.monotonic()
    try:
        app(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
    ray = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
    print(f"EXIT={{code}} RAY={{len(ray)}} SECONDS={{time.monotonic() - started:.1f}}")
    """
)


def _cli(args: list[str], prelude: str = "", timeout: float = 240) -> str:
    result = subprocess.run(
        [sys.executable, "-c", RUN_CLI.format(prelude=prelude), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        env={**{k: v for k, v in os.environ.items() if k != "TARTOK_RAY_ADDRESS"}, **LOOPBACK_ENV},
    )
    return result.stdout + result.stderr


def _run_args(tmp_path: Path, model_dir: Path) -> list[str]:
    from tartok_tui.demo.data import write_emilia_tar

    write_emilia_tar(tmp_path / "in" / "EN-B000000.tar", 2, seed=0, audio_format="flac")
    return ["run", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
            "-m", str(model_dir), "--num-proc", "1", "--device", "cpu", "--no-tui",
            "--threads-per-worker", "1"]  # fmt: skip


@pytest.mark.timeout(300)
def test_a_run_without_ray_address_never_imports_ray(tmp_path: Path, tiny_model_dir) -> None:
    output = _cli(_run_args(tmp_path, tiny_model_dir))
    assert "EXIT=0 RAY=0" in output, output


def test_ray_address_without_ray_installed_exits_2_naming_the_install_command(
    tmp_path: Path, tiny_model_dir
) -> None:
    args = [*_run_args(tmp_path, tiny_model_dir), "--ray-address", "auto"]
    output = _cli(args, prelude="sys.modules['ray'] = None  # as if not installed")
    assert "EXIT=2" in output, output
    assert "pip install 'tartok-tui[ray]'" in " ".join(output.split()), output


def test_an_address_where_no_cluster_answers_exits_2_quickly(
    tmp_path: Path, tiny_model_dir
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    output = _cli([*_run_args(tmp_path, tiny_model_dir), "--ray-address", f"127.0.0.1:{port}"])
    assert "EXIT=2" in output, output
    assert f"127.0.0.1:{port}: no Ray cluster answers there" in " ".join(output.split())
    assert time.monotonic() - started < 60  # Ray's own retries would take minutes
    assert not (tmp_path / "out" / "logs").exists()  # no worker was started

"""What cluster mode costs the supervisor, against local mode, with many workers.

Runs the same tars twice with the tiny random-weight model and one torch thread per worker:
once with local worker subprocesses, once on a simulated Ray cluster on this machine (a
head without CPUs and ``--nodes`` worker nodes, all on 127.0.0.1). The supervisor runs in
this process, so its CPU time (every thread of the process: the supervisor's loop and, in
cluster mode, Ray's driver threads; never the workers, the actors or the nodes) is read
with ``time.process_time``. For each worker, the time from its tar's release (its
``TarDone`` reaching the supervisor) to its next lease starting (its ``TarStarted``
reaching the supervisor) is the round trip a new lease costs: dispatch, the request to the
worker, the worker opening the tar, its answer (through the actor relay in cluster mode).

    uv run python benchmarks/bench_cluster.py --nodes 8 --workers 32
    uv run python benchmarks/bench_cluster.py --nodes 8 --workers 32 --sleep-ms 200

With many busy workers on a small machine the latency measures CPU starvation more than
the relay: ``--sleep-ms`` makes each sample wait (fault injection ``slow_ms``, a sleep, no
CPU) so the workers leave the machine idle enough to see the relay's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

for key, value in {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # every Ray process on 127.0.0.1
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
}.items():
    os.environ[key] = value

from tartok_tui import messages as m  # noqa: E402
from tartok_tui.codec.random_model import write_random_model  # noqa: E402
from tartok_tui.config import RunConfig  # noqa: E402
from tartok_tui.demo.data import write_emilia_tar  # noqa: E402
from tartok_tui.supervisor.process import (  # noqa: E402
    LocalLauncher,
    Warn,
    WorkerLauncher,
    WorkerProcess,
    WorkerSpec,
)
from tartok_tui.supervisor.supervisor import Supervisor  # noqa: E402


class TimedProcess:
    """A worker process whose TarDone / TarStarted arrivals are timed (once every worker has
    loaded: while some still load, the machine is busy loading, not relaying)."""

    def __init__(self, inner: WorkerProcess, launcher: TimedLauncher) -> None:
        self._inner = inner
        self._launcher = launcher
        self._released_at: float | None = None
        self.pid = inner.pid
        self.node = inner.node

    def send(self, msg: m.Message) -> bool:
        return self._inner.send(msg)

    async def messages(self, warn: Warn) -> AsyncIterator[m.Message]:
        async for msg in self._inner.messages(warn):
            if isinstance(msg, m.Ready):
                self._launcher.ready += 1
            elif isinstance(msg, m.TarDone):
                self._released_at = time.perf_counter()
            elif isinstance(msg, m.TarStarted) and self._released_at is not None:
                if self._launcher.ready >= self._launcher.workers:
                    self._launcher.gaps.append(time.perf_counter() - self._released_at)
                self._released_at = None
            yield msg

    def kill(self) -> None:
        self._inner.kill()

    async def wait(self) -> int:
        return await self._inner.wait()

    async def memory(self, pss):
        return await self._inner.memory(pss)


class TimedLauncher:
    def __init__(self, inner: WorkerLauncher, workers: int) -> None:
        self.inner = inner
        self.workers = workers
        self.ready = 0
        self.gaps: list[float] = []

    def describe(self, spec: WorkerSpec) -> str:
        return self.inner.describe(spec)

    async def start(self, spec: WorkerSpec) -> WorkerProcess:
        return TimedProcess(await self.inner.start(spec), self)


def make_data(root: Path, tars: int, samples: int) -> tuple[Path, Path]:
    model_dir = write_random_model(root / "model", "tiny")
    for t in range(tars):
        write_emilia_tar(
            root / "input" / f"EN-B{t:06d}.tar", samples, seed=t, batch=t,
            audio_format="wav", min_s=1.0, max_s=3.0,
        )  # fmt: skip
    return model_dir, root / "input"


def run_once(config: RunConfig, launcher: WorkerLauncher) -> dict:
    timed = TimedLauncher(launcher, config.num_proc or 1)
    bind = getattr(launcher, "bind", None)
    supervisor = Supervisor(config, launcher=timed)
    if bind is not None:
        bind(supervisor.report)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    summary = asyncio.run(supervisor.run())
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if summary.exit_code != 0:
        raise SystemExit(f"run failed: {summary.exit_reason}")
    gaps = sorted(timed.gaps)
    return {
        "samples": summary.samples,
        "wall": wall,
        "cpu": cpu,
        "gap_median_ms": 1000 * statistics.median(gaps) if gaps else float("nan"),
        "gap_p95_ms": 1000 * gaps[int(0.95 * (len(gaps) - 1))] if gaps else float("nan"),
        "gap_max_ms": 1000 * gaps[-1] if gaps else float("nan"),
        "gaps": len(gaps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--tars", type=int, default=None, help="default: 8 per worker")
    parser.add_argument("--samples-per-tar", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--sleep-ms", type=float, default=0.0, help="sleep per sample")
    parser.add_argument("--skip-local", action="store_true")
    args = parser.parse_args()
    tars = args.tars if args.tars is not None else 8 * args.workers

    root = args.workdir or Path(tempfile.mkdtemp(prefix="tartok-bench-cluster-"))
    model_dir, input_dir = make_data(root, tars, args.samples_per_tar)

    slow = {"TARTOK_FAULT_INJECT": f"slow_ms={args.sleep_ms:g}"} if args.sleep_ms else {}

    def config(name: str, **kw) -> RunConfig:
        return RunConfig(
            input_dir=input_dir, output_dir=root / name, model_dir=str(model_dir),
            num_proc=args.workers, device="cpu", threads_per_worker=1,
            worker_env=slow, **kw,
        )  # fmt: skip

    results = {}
    if not args.skip_local:
        results["local"] = run_once(config("out-local"), LocalLauncher())

    from ray.cluster_utils import Cluster

    from tartok_tui.supervisor.ray_cluster import connect, disconnect
    from tartok_tui.supervisor.ray_launcher import RayLauncher

    node = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20}
    per_node = -(-args.workers // args.nodes)
    started = time.perf_counter()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**node, "num_cpus": 0, "include_dashboard": False,
                        "dashboard_host": "127.0.0.1"},
    )  # fmt: skip
    for _ in range(args.nodes):
        cluster.add_node(**node, num_cpus=per_node)
    cluster.wait_for_nodes()
    cluster_start = time.perf_counter() - started
    try:
        connect(cluster.address)
        launcher = RayLauncher(model_source=str(model_dir))
        results["ray"] = run_once(config("out-ray", ray_address=cluster.address), launcher)
        launcher.close()
    finally:
        disconnect()
        cluster.shutdown()

    samples = tars * args.samples_per_tar
    print(
        f"{args.workers} workers, {tars} tars x {args.samples_per_tar} samples = {samples}; "
        f"Ray: {args.nodes} simulated nodes x {per_node} CPUs (cluster start {cluster_start:.1f} s)"
        + (f"; workers sleep {args.sleep_ms:g} ms per sample" if args.sleep_ms else "")
    )
    print(
        f"{'mode':6} {'wall s':>7} {'sup CPU s':>10} {'CPU ms/sample':>14} "
        f"{'release->next lease ms: median':>31} {'p95':>7} {'max':>7} {'n':>5}"
    )
    for mode, r in results.items():
        print(
            f"{mode:6} {r['wall']:7.1f} {r['cpu']:10.2f} {1000 * r['cpu'] / r['samples']:14.2f} "
            f"{r['gap_median_ms']:31.1f} {r['gap_p95_ms']:7.1f} {r['gap_max_ms']:7.1f} "
            f"{r['gaps']:5d}"
        )


if __name__ == "__main__":
    main()

"""Simulated Ray clusters for the cluster-mode tests: every process on 127.0.0.1 only.

Importing this module sets the environment Ray reads at import and passes on to every
process it starts (the nodes, the actors, and `tartok-tui run` subprocesses).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

# Keep every Ray process on the loopback address (Ray otherwise swaps 127.0.0.1 for the
# machine's interface address), send no usage statistics, and never start actors through
# `uv run` (the tests' driver runs under it).
LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
}
os.environ.update(LOOPBACK_ENV)

NODE_ARGS = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20}
HEAD_ARGS = {
    **NODE_ARGS,
    "num_cpus": 0,
    "include_dashboard": False,
    "dashboard_host": "127.0.0.1",
}


def start_cluster(workers: int, **worker_args):
    """A head without CPUs and ``workers`` worker nodes (``worker_args`` each)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args=dict(HEAD_ARGS))
    for _ in range(workers):
        cluster.add_node(**NODE_ARGS, **worker_args)
    cluster.wait_for_nodes()
    return cluster


def worker_processes(marker: Path | str) -> list[psutil.Process]:
    """Live worker subprocesses whose options name ``marker`` (a test's own directory).

    The options travel in the worker's environment (secrets stay off command lines)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or "tartok_tui.worker" not in cmdline:
            continue
        try:
            options = proc.environ().get("TARTOK_WORKER_OPTIONS", "")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(marker) in options or any(str(marker) in part for part in cmdline):
            found.append(proc)
    return found


def host_actor_processes() -> list[psutil.Process]:
    """Live Ray worker processes hosting a worker (Ray titles them after the actor class)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if "ray::WorkerHost" in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def wait_until(predicate, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)

"""Simulated Ray clusters for the cluster-mode tests: every process on 127.0.0.1 only.

Importing this module sets the environment Ray reads at import and passes on to every
process it starts (the nodes, the actors, and `tartok-tui run` subprocesses).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
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


def can_mount_privately() -> bool:
    """Whether this machine lets us start a process with mounts of its own (unprivileged
    user and mount namespaces: ``unshare --user --map-root-user --mount``)."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True
    )
    return probe.returncode == 0


@contextlib.contextmanager
def node_with_own_disk(cluster, own: Path, shadows: Path, **node_args) -> Iterator[str]:
    """A Ray node joined to ``cluster`` whose processes see the directory ``own`` at the
    path ``shadows``: as a cluster node whose ``/data`` is a disk of its own sees it. Yields
    the node's id; the node and everything it started end on leaving.

    The node runs in a mount namespace of its own (``unshare``), a process apart from this
    one, started as ``Cluster.add_node`` starts one in-process."""
    script = "import sys, ray_support; ray_support.serve_node(sys.argv[1], sys.argv[2])"
    command = [
        "unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
        'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(own), str(shadows),
        sys.executable, "-c", script, cluster.gcs_address, json.dumps(node_args),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        node_id = proc.stdout.readline().strip()
        if not node_id:
            raise RuntimeError(f"the node with its own disk did not start ({proc.wait(30)})")
        yield node_id
    finally:
        proc.stdin.close()  # the node ends its processes and exits
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_node(gcs_address: str, node_args: str) -> None:
    """One Ray node joined to ``gcs_address`` until stdin closes (run by node_with_own_disk,
    inside its namespace); prints the node's id once it is up."""
    import ray._private.node
    from ray._private.parameter import RayParams

    params = RayParams(**{**NODE_ARGS, **json.loads(node_args)})
    params.update_if_absent(
        gcs_address=gcs_address, include_log_monitor=False, node_manager_port=0,
        min_worker_port=0, max_worker_port=0,
    )  # fmt: skip
    params.dashboard_agent_listen_port = None
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    print(node.node_id, flush=True)
    sys.stdin.read()
    node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)


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

"""Joining a Ray cluster, reading its nodes, and planning worker slots over them.

Imported only with ``--ray-address``: nothing else in the tool imports ray. The driver
(the supervisor's process) must run on a machine of the cluster (the head, usually);
Ray Client addresses (``ray://``) are refused, since the supervisor reads and writes
the same input and output paths as the workers.

Slots over a cluster: with GPUs, ``--procs-per-gpu`` workers per GPU over every GPU of
the cluster, each asking Ray for ``1/procs_per_gpu`` of a GPU and its fair part of its
node's cores; without GPUs (or with ``--device cpu``), ``--num-proc`` workers in all,
each asking for as many CPUs as it runs torch threads.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

from tartok_tui.config import ConfigError, RunConfig
from tartok_tui.supervisor.placement import Placement, thread_env

INSTALL_HINT = "pip install 'tartok-tui[ray]'"
CONNECT_TIMEOUT_S = 60.0
"""Longest wait for ``ray.init`` to join the cluster before giving up with an error."""
PROBE_TIMEOUT_S = 5.0
"""TCP connect to the head's address, before Ray's own (much longer) retries."""
DEFAULT_CPU_THREADS = 4
"""Torch threads (= CPUs asked of Ray) of a CPU worker when neither --threads-per-worker
nor --num-proc says otherwise: a few threads per model copy keeps its memory per core low."""
RESOURCE_STEP = 1e-4
"""Ray keeps fractional resources to four decimals."""


def import_ray() -> ModuleType:
    """The ray module, or a ConfigError naming the install command."""
    # Without this, a driver started by ``uv run`` would pack the current directory,
    # upload it to the cluster and start every actor through ``uv run`` as well; the
    # workers run tartok-tui as installed on each node instead.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            f"--ray-address needs Ray, which is not installed here: {INSTALL_HINT}"
        ) from exc
    return ray


# ---------------------------------------------------------------- connecting


def parse_host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a HOST:PORT address; None for "auto"."""
    if address.strip().lower() == "auto":
        return None
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"--ray-address {address!r}: expected HOST:PORT of the cluster's head "
            "(as `ray start --head` prints it) or auto"
        )
    return host.strip("[]"), int(port)


def probe(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast, with a clear message, when nothing answers at the head's address."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ConfigError(
            f"--ray-address {host}:{port}: no Ray cluster answers there ({reason}). Start "
            "one with `ray start --head` or give the address it printed."
        ) from exc


def connect(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> ModuleType:
    """Join the cluster at ``address`` (once per process); ConfigError if it cannot."""
    if address.strip().startswith("ray://"):
        raise ConfigError(
            f"--ray-address {address!r}: Ray Client addresses are not supported; run "
            "tartok-tui on a machine of the cluster with --ray-address auto or HOST:PORT"
        )
    ray = import_ray()
    if ray.is_initialized():
        return ray
    target = parse_host_port(address)
    if target is not None:
        probe(*target)
    outcome: list[BaseException | None] = []

    def init() -> None:
        try:
            ray.init(
                address=address,
                # Actors' prints would land in the dashboard: their logs stay on the nodes.
                log_to_driver=False,
                # No handler of Ray's own on the terminal the dashboard draws on: Ray's
                # warnings go through Python's last-resort handler to the current stderr.
                configure_logging=False,
            )
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    # ray.init retries for minutes when the head answers TCP but not as a Ray head. From
    # this thread it cannot install its SIGTERM handler and says so; the run has its own.
    quiet = logging.getLogger("ray._private.worker")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    thread = threading.Thread(target=init, name="ray-connect", daemon=True)
    thread.start()
    thread.join(timeout_s)
    quiet.setLevel(level)
    if not outcome:
        raise ConfigError(
            f"--ray-address {address}: could not join the Ray cluster within {timeout_s:g} s "
            "(is it a Ray head, of the same Ray version, and is RAY_AUTH_TOKEN set if the "
            "cluster uses token authentication?)"
        )
    error = outcome[0]
    if error is not None:
        raise ConfigError(f"--ray-address {address}: cannot join the Ray cluster: {error}")
    return ray


def disconnect() -> None:
    """Leave the cluster (actors this process started are ended by Ray)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


# ---------------------------------------------------------------- nodes


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    hostname: str
    address: str
    cpus: float
    gpus: float

    @property
    def label(self) -> str:
        """How the views name the node: its host name and the start of its Ray id (one
        machine may run several Ray nodes)."""
        return node_label(self.hostname, self.node_id)


def node_label(hostname: str, node_id: str) -> str:
    return f"{hostname}/{node_id[:6]}"


def alive_nodes(ray: ModuleType) -> list[NodeInfo]:
    """The cluster's nodes that Ray counts alive now (a call to the head)."""
    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        nodes.append(
            NodeInfo(
                node_id=node["NodeID"],
                hostname=node.get("NodeManagerHostname", "?"),
                address=node.get("NodeManagerAddress", "?"),
                cpus=float(resources.get("CPU", 0.0)),
                gpus=float(resources.get("GPU", 0.0)),
            )
        )
    return nodes


def node_loss(ray: ModuleType, exc: BaseException, node_id: str) -> str | None:
    """Why a worker's actor ended with its node, or None when the node lives on (the
    actor or its worker died on its own: a crash). Blocking (asks the head).

    The one place that tells the two apart: Ray says the node was preempted, or
    ``ray.nodes()`` lists the actor's node as not alive, or no longer lists it. When the
    head cannot be asked, the end counts as a crash, as it would on one machine.
    """
    if isinstance(exc, ray.exceptions.ActorDiedError) and exc.preempted:
        return "its node was preempted"
    try:
        nodes = ray.nodes()
    except Exception as exc_nodes:
        logging.getLogger("tartok_tui.supervisor").warning(
            "could not ask the cluster whether node %s lives: %s", node_id, exc_nodes
        )
        return None
    for node in nodes:
        if node.get("NodeID") != node_id:
            continue
        if node.get("Alive"):
            return None
        why = str(node.get("DeathReasonMessage") or "").strip()
        return "its node died" + (f" ({why})" if why else "")
    return "its node left the cluster"


def describe_nodes(nodes: Sequence[NodeInfo]) -> str:
    cpus = sum(n.cpus for n in nodes)
    gpus = sum(n.gpus for n in nodes)
    return f"{len(nodes)} nodes, {cpus:g} CPUs, {gpus:g} GPUs"


# ---------------------------------------------------------------- planning


def _floor_step(value: float) -> float:
    return math.floor(value / RESOURCE_STEP + 1e-6) * RESOURCE_STEP


def plan_cluster(config: RunConfig, nodes: Sequence[NodeInfo]) -> list[Placement]:
    """One placement per slot over the cluster's nodes as they are now.

    A placement's ``device`` is "gpu" or "cpu" (Ray picks the node and the GPU when the
    worker starts); ``resources`` is what its actor asks Ray for.
    """
    device = config.device.strip().lower()
    if device not in ("auto", "cuda", "cpu"):
        raise ConfigError(
            f"--device {config.device!r}: with --ray-address, Ray assigns the GPUs; "
            "use auto, cuda or cpu"
        )
    total_gpus = int(sum(math.floor(n.gpus) for n in nodes))
    if device == "cuda" and total_gpus == 0:
        raise ConfigError("--device cuda: the Ray cluster has no GPU")
    if device != "cpu" and total_gpus > 0:
        return _plan_gpu(config, [n for n in nodes if n.gpus >= 1], total_gpus)
    return _plan_cpu(config, nodes)


def _plan_gpu(config: RunConfig, gpu_nodes: Sequence[NodeInfo], total_gpus: int) -> list[Placement]:
    per_gpu = config.procs_per_gpu
    n = config.num_proc if config.num_proc is not None else per_gpu * total_gpus
    # The cores a worker may count on: the scarcest GPU node's cores per GPU share.
    fair = min(node.cpus / (math.floor(node.gpus) * per_gpu) for node in gpu_nodes)
    threads = config.threads_per_worker or max(1, int(fair))
    resources = {"GPU": _floor_step(1.0 / per_gpu), "CPU": _floor_step(min(threads, fair))}
    return [
        # Ray places up to per_gpu shares on a GPU, this run's or another's.
        Placement(slot, "gpu", "cuda:0", threads, thread_env(threads), dict(resources), per_gpu)
        for slot in range(n)
    ]


def _plan_cpu(config: RunConfig, nodes: Sequence[NodeInfo]) -> list[Placement]:
    biggest = max((math.floor(node.cpus) for node in nodes), default=0)
    if config.threads_per_worker is not None:
        threads = config.threads_per_worker
    elif config.num_proc is not None:
        total = sum(math.floor(node.cpus) for node in nodes)
        threads = max(1, min(total // config.num_proc, biggest))
    else:
        threads = max(1, min(DEFAULT_CPU_THREADS, biggest))
    if config.num_proc is not None:
        n = config.num_proc
    else:
        n = max(1, sum(math.floor(node.cpus) // threads for node in nodes))
    return [
        Placement(slot, "cpu", "cpu", threads, thread_env(threads), {"CPU": float(threads)})
        for slot in range(n)
    ]


def plan_cluster_slots(config: RunConfig) -> list[Placement]:
    """Join the cluster named by ``config.ray_address`` and plan the slots over it."""
    assert config.ray_address is not None
    ray = connect(config.ray_address)
    return plan_cluster(config, alive_nodes(ray))

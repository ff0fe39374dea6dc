"""Where each worker runs: slot -> device, torch threads and environment.

The one place that decides GPU assignment. GPU ``k`` here is the k-th GPU the
supervisor can see (after the user's ``CUDA_VISIBLE_DEVICES``); each GPU worker
gets ``CUDA_VISIBLE_DEVICES`` narrowed to its own GPU and runs on ``cuda:0``,
so it can never allocate a context on a neighbour's GPU.
"""

from __future__ import annotations

import ctypes
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tartok_tui.codec.cuda_driver import error_name, load_driver, nvidia_device_nodes
from tartok_tui.config import ConfigError, RunConfig


@dataclass(frozen=True)
class Placement:
    slot: int
    device: str
    """As shown to the user: "cpu" or "cuda:K" (K among the GPUs the supervisor sees)."""
    worker_device: str
    """As passed to the worker: "cpu" or "cuda:0" (its only visible GPU)."""
    threads: int
    """Torch intra-op threads for this worker."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment overrides for the worker process."""
    resources: dict[str, float] = field(default_factory=dict)
    """What the worker asks a cluster scheduler for (Ray resources); empty on one machine."""
    gpu_sharers: int = 1
    """Workers that may share this worker's GPU, itself included (1 on the CPU)."""


def available_cores() -> int:
    """Cores this process may run on (affinity-aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class DriverStatus:
    """What the CUDA driver said when asked to start (cuInit)."""

    library: bool
    """A driver library could be loaded."""
    init_error: int = 0
    """cuInit's result: 0 is success (100: no device, 999: unknown error, ...)."""
    error_name: str | None = None
    gpu_count: int = 0


def probe_driver() -> DriverStatus:
    """Ask the CUDA driver library directly: importing torch for this would cost the
    supervisor ~0.5 GB and seconds, and it never runs a model itself."""
    lib = load_driver()
    if lib is None:
        return DriverStatus(library=False)
    code = lib.cuInit(0)
    if code != 0:
        return DriverStatus(True, code, error_name(lib, code))
    count = ctypes.c_int(0)
    code = lib.cuDeviceGetCount(ctypes.byref(count))
    if code != 0:
        return DriverStatus(True, code, error_name(lib, code))
    return DriverStatus(True, 0, None, max(0, count.value))


def visible_gpu_count() -> int:
    """GPUs the CUDA driver shows this process (CUDA_VISIBLE_DEVICES applies), 0 without one."""
    return probe_driver().gpu_count


def _hidden_on_purpose(parent_env: dict[str, str]) -> bool:
    """CUDA_VISIBLE_DEVICES set to hide every GPU ("" or -1): no GPU is what was asked."""
    value = parent_env.get("CUDA_VISIBLE_DEVICES")
    return value is not None and value.strip() in ("", "-1")


def usable_gpu_count(
    device: str,
    parent_env: dict[str, str],
    device_nodes: Callable[[], list[Path]] = nvidia_device_nodes,
    driver: Callable[[], DriverStatus] = probe_driver,
) -> int:
    """GPUs for --device DEVICE; ConfigError when this machine has NVIDIA device nodes but
    the driver does not start: a run would otherwise go on at CPU speed without a word."""
    if device.strip().lower() == "cpu":
        return 0
    status = driver()
    if status.init_error == 0 and status.library:
        return status.gpu_count
    nodes = device_nodes()
    if not nodes or _hidden_on_purpose(parent_env):
        return 0
    where = ", ".join(str(n) for n in nodes)
    if not status.library:
        problem = "no CUDA driver library (libcuda.so.1) could be loaded"
    else:
        name = f" {status.error_name}" if status.error_name else ""
        problem = f"the CUDA driver failed to start: cuInit error {status.init_error}{name}"
    visible = parent_env.get("CUDA_VISIBLE_DEVICES")
    hint = f"; CUDA_VISIBLE_DEVICES={visible!r} may name no GPU" if visible else ""
    raise ConfigError(
        f"NVIDIA devices are present ({where}) but {problem}{hint}. Check `nvidia-smi`; the "
        "pinned torch is a CUDA 13 build that needs driver >= 580. Or run on the CPU with "
        "--device cpu."
    )


def select_gpus(device: str, n_visible: int) -> list[int]:
    """GPU indices named by the ``device`` option; empty list means the CPU."""
    spec = device.strip().lower()
    if spec == "cpu":
        return []
    if spec == "auto":
        return list(range(n_visible))
    if spec == "cuda":
        if n_visible == 0:
            raise ConfigError("--device cuda: no GPU is visible (check CUDA_VISIBLE_DEVICES)")
        return list(range(n_visible))
    if spec.startswith("cuda:"):
        try:
            indices = [int(part) for part in spec[len("cuda:") :].split(",") if part.strip()]
        except ValueError as exc:
            raise ConfigError(f"--device {device!r}: expected cuda:0,1,...") from exc
        if not indices:
            raise ConfigError(f"--device {device!r}: no GPU index given")
        bad = [i for i in indices if i < 0 or i >= n_visible]
        if bad:
            raise ConfigError(
                f"--device {device!r}: GPU {bad[0]} is not visible ({n_visible} GPU(s) visible)"
            )
        if len(set(indices)) != len(indices):
            raise ConfigError(f"--device {device!r}: a GPU is named twice")
        return indices
    raise ConfigError(f"--device {device!r}: expected auto, cpu, cuda or cuda:0,1")


def _physical_ids(n_visible: int, parent_env: dict[str, str]) -> list[str]:
    """What to put in a child's CUDA_VISIBLE_DEVICES for each visible GPU index."""
    inherited = parent_env.get("CUDA_VISIBLE_DEVICES")
    if inherited:
        ids = [part.strip() for part in inherited.split(",") if part.strip()]
        if len(ids) >= n_visible:
            return ids[:n_visible]
    return [str(i) for i in range(n_visible)]


def thread_env(threads: int) -> dict[str, str]:
    """A worker's thread settings: intra-op pools read these at import, so MKL and OpenMP
    agree with torch."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def plan_slots(
    config: RunConfig,
    n_visible_gpus: int | None = None,
    cores: int | None = None,
    parent_env: dict[str, str] | None = None,
    device_nodes: Callable[[], list[Path]] = nvidia_device_nodes,
    driver: Callable[[], DriverStatus] = probe_driver,
) -> list[Placement]:
    """One placement per slot: GPU of slot i = (i // procs_per_gpu) % n_gpus.

    GPUs are counted with usable_gpu_count() unless `n_visible_gpus` is given (its
    `device_nodes` and `driver` are what tests fake).

    Without a GPU every worker runs on the CPU and the cores are shared among
    them (threads = cores // workers, at least 1) rather than oversubscribed.
    """
    parent_env = dict(os.environ) if parent_env is None else parent_env
    if n_visible_gpus is None:
        n_visible_gpus = usable_gpu_count(config.device, parent_env, device_nodes, driver)
    cores = cores if cores is not None else available_cores()
    if config.procs_per_gpu < 1:
        raise ConfigError("--procs-per-gpu must be at least 1")
    gpus = select_gpus(config.device, n_visible_gpus)
    if config.num_proc is not None and config.num_proc < 1:
        raise ConfigError("--num-proc must be at least 1")
    n = (
        config.num_proc
        if config.num_proc is not None
        else (config.procs_per_gpu * len(gpus) if gpus else 1)
    )
    if config.threads_per_worker is not None:
        if config.threads_per_worker < 1:
            raise ConfigError("--threads-per-worker must be at least 1")
        threads = config.threads_per_worker
    else:
        threads = max(1, cores // n)
    physical = _physical_ids(n_visible_gpus, parent_env)
    # More slots than procs_per_gpu x GPUs wrap around: count who really shares each GPU.
    slot_gpus = (
        [gpus[(slot // config.procs_per_gpu) % len(gpus)] for slot in range(n)] if gpus else []
    )
    sharers = Counter(slot_gpus)
    placements = []
    for slot in range(n):
        env = thread_env(threads)
        if gpus:
            gpu = slot_gpus[slot]
            env["CUDA_VISIBLE_DEVICES"] = physical[gpu]
            placements.append(
                Placement(slot, f"cuda:{gpu}", "cuda:0", threads, env, gpu_sharers=sharers[gpu])
            )
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""
            placements.append(Placement(slot, "cpu", "cpu", threads, env))
    return placements

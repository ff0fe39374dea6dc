"""Where each worker runs: slot -> device, torch threads and environment.

The one place that decides GPU assignment. GPU ``k`` here is the k-th GPU the
supervisor can see (after the user's ``CUDA_VISIBLE_DEVICES``); each GPU worker
gets ``CUDA_VISIBLE_DEVICES`` narrowed to its own GPU and runs on ``cuda:0``,
so it can never allocate a context on a neighbour's GPU.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field

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


def available_cores() -> int:
    """Cores this process may run on (affinity-aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


CUDA_DRIVER_LIBS = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")


def visible_gpu_count() -> int:
    """GPUs the CUDA driver shows this process (CUDA_VISIBLE_DEVICES applies), 0 without one.

    Asked of the driver library directly: importing torch for this would cost the supervisor
    ~0.5 GB and seconds, and it never runs a model itself.
    """
    for name in CUDA_DRIVER_LIBS:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        # cuInit fails (100: no device, 999: unknown) on machines without a usable GPU.
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return max(0, count.value)
    return 0


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


def plan_slots(
    config: RunConfig,
    n_visible_gpus: int | None = None,
    cores: int | None = None,
    parent_env: dict[str, str] | None = None,
) -> list[Placement]:
    """One placement per slot: GPU of slot i = (i // procs_per_gpu) % n_gpus.

    Without a GPU every worker runs on the CPU and the cores are shared among
    them (threads = cores // workers, at least 1) rather than oversubscribed.
    """
    if n_visible_gpus is None:
        n_visible_gpus = 0 if config.device.strip().lower() == "cpu" else visible_gpu_count()
    cores = cores if cores is not None else available_cores()
    parent_env = dict(os.environ) if parent_env is None else parent_env
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
    placements = []
    for slot in range(n):
        # Intra-op pools read these at import; set them so MKL/OpenMP agree with torch.
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if gpus:
            gpu = gpus[(slot // config.procs_per_gpu) % len(gpus)]
            env["CUDA_VISIBLE_DEVICES"] = physical[gpu]
            placements.append(Placement(slot, f"cuda:{gpu}", "cuda:0", threads, env))
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""
            placements.append(Placement(slot, "cpu", "cpu", threads, env))
    return placements

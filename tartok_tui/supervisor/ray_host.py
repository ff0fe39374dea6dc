"""The host of one worker on a cluster node (the body of a Ray actor).

It starts the same worker a local run starts (``python -m tartok_tui.worker``: JSON lines
over pipes, in a session of its own, stderr to its log file) on its node, and relays the
pipes: ``send`` writes the supervisor's requests to the worker's stdin; ``pull`` returns
the lines the worker wrote since the last pull (waiting a little when there are none)
and, once its output has ended, its exit code.

Why a subprocess and not the worker loop inside the actor: a kill takes the worker's whole
process group at once (SIGKILL works on a frozen process); a dead CUDA context ends with
its process, not with Ray's worker; the worker keeps its own stdout, PDEATHSIG and
allocator settings; and it is the very code a local run uses. See docs/ARCHITECTURE.md.

Nothing here imports ray at module level: the launcher makes the class an actor, and
tests can drive it directly.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from tartok_tui import messages as m
from tartok_tui.output.shared import SharedProof, proof_problem
from tartok_tui.storage import Access
from tartok_tui.supervisor.memory import tree_memory
from tartok_tui.supervisor.preflight import probe_writable
from tartok_tui.supervisor.process import killpg, spawn_worker
from tartok_tui.worker.options import WorkerOptions

PULL_MAX_BYTES = 1 << 20
"""At most this much of the worker's output per pull (more waits for the next one)."""
FALLBACK_LOG_DIR = "tartok-tui-logs"
"""Under the node's temp dir, when the run's log dir is not writable from the node."""


@dataclass(frozen=True)
class NodePlace:
    """Where Ray put this actor: its node and the GPUs it was given there."""

    node_id: str
    hostname: str
    gpu_ids: tuple[str, ...]


def ray_place() -> NodePlace:
    """This actor's node and GPUs, as Ray assigned them."""
    import ray

    context = ray.get_runtime_context()
    gpus = context.get_accelerator_ids().get("GPU", [])
    return NodePlace(context.get_node_id(), socket.gethostname(), tuple(str(g) for g in gpus))


# ---------------------------------------------------------------- node checks


def _readable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.R_OK | os.X_OK)


def _writable_dir(path: Path) -> bool:
    try:
        probe_writable(path)
    except OSError:
        return False
    return True


def prepare_node(
    options: WorkerOptions, model_source: str | None, proof: SharedProof | None = None
) -> tuple[WorkerOptions, list[str]]:
    """Check the run's paths from this node, and fetch a Hub model into its cache.

    ``proof``: the driver's token file in the output, read back here through the calls
    the worker commits with (see ``output.shared``). Returns the options with the model
    dir as found here, and the problems (empty: fine).
    """
    from tartok_tui.hub import ModelSourceError, looks_like_repo_id, resolve_model_dir

    problems = []
    if isinstance(options.input_dir, Path) and not _readable_dir(options.input_dir):
        problems.append(f"input dir {options.input_dir} is not readable")
    if isinstance(options.output_dir, Path) and not _writable_dir(options.output_dir):
        problems.append(f"output dir {options.output_dir} is not writable")
    elif proof is not None:
        access = Access(options=options.storage_options)
        shared = proof_problem(options.output_dir, access, proof)
        if shared is not None:
            problems.append(shared)
    model_dir = options.model_dir
    if not model_dir.is_dir() and model_source is not None and looks_like_repo_id(model_source):
        try:
            model_dir = resolve_model_dir(model_source)
        except ModelSourceError as exc:
            problems.append(f"model {model_source}: {exc}")
            return options, problems
    if not os.access(model_dir / "config.yaml", os.R_OK):
        problems.append(f"model dir {model_dir} is not readable (no config.yaml)")
    return replace(options, model_dir=model_dir), problems


def open_log(path: Path, header: str) -> tuple[IO[bytes], Path]:
    """The worker's log file on this node: the run's log path, or the node's temp dir when
    that cannot be written from here."""
    for candidate in (path, Path(tempfile.gettempdir()) / FALLBACK_LOG_DIR / path.name):
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            log = open(candidate, "ab")  # noqa: SIM115 (handed to the subprocess, closed here)
        except OSError:
            continue
        log.write(header.encode())
        log.flush()
        return log, candidate
    raise OSError(f"no writable place for the worker's log (tried {path})")


# ---------------------------------------------------------------- the host


class WorkerHost:
    """One worker subprocess on this node and its relayed pipes."""

    def __init__(self, slot: int, place: Callable[[], NodePlace] = ray_place) -> None:
        self.slot = slot
        self._place = place
        self._proc: asyncio.subprocess.Process | None = None
        self._lines: list[bytes] = []
        self._eof = False
        self._arrived: asyncio.Event | None = None
        self._reader: asyncio.Task[None] | None = None
        self._delivered = 0
        """The last batch number written to the worker (see ``send``)."""

    async def where(self) -> NodePlace:
        return self._place()

    async def start(
        self,
        options_json: str,
        env: dict[str, str],
        log_path: str,
        model_source: str | None,
        proof: SharedProof | None = None,
    ) -> dict:
        """Check paths, start the worker; {"pid", "log", "gpus", ...} or {"error": why}."""
        place = self._place()
        options = WorkerOptions.from_json(options_json)
        options, problems = await asyncio.to_thread(prepare_node, options, model_source, proof)
        if problems:
            return {"error": "; ".join(problems)}
        header = (
            f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} worker of slot {self.slot} on "
            f"{place.hostname} (Ray node {place.node_id[:12]}), GPUs "
            f"[{','.join(place.gpu_ids)}] ---\n"
        )
        try:
            log, log_at = await asyncio.to_thread(open_log, Path(log_path), header)
        except OSError as exc:
            return {"error": str(exc)}
        child_env = {**env, "CUDA_VISIBLE_DEVICES": ",".join(place.gpu_ids)}
        try:
            with log:
                self._proc = await spawn_worker(options, child_env, log)
        except OSError as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        return {"pid": self._proc.pid, "log": str(log_at), "gpus": list(place.gpu_ids)}

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        assert self._arrived is not None
        stdout = self._proc.stdout
        while True:
            try:
                line = await stdout.readline()
            except ValueError:
                line = m.encode(m.Log("warning", "oversized line from the worker ignored"))
            if not line:
                break
            self._lines.append(line)
            self._arrived.set()
        self._eof = True
        self._arrived.set()

    async def pull(self, max_wait_s: float) -> tuple[list[bytes], int | None]:
        """The worker's lines since the last pull, and its exit code once it has ended."""
        if self._proc is None or self._arrived is None:
            return [], None
        if not self._lines and not self._eof:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), max_wait_s)
            except TimeoutError:
                return [], None
        size = 0
        taken = 0
        for line in self._lines:
            if taken and size + len(line) > PULL_MAX_BYTES:
                break
            size += len(line)
            taken += 1
        lines, self._lines = self._lines[:taken], self._lines[taken:]
        rc = await self._proc.wait() if self._eof and not self._lines else None
        return lines, rc

    async def send(self, data: bytes, seq: int) -> bool:
        """Write requests to the worker's stdin; False when it can no longer receive.

        ``seq`` numbers the relay's batches: a batch sent again (its first call's answer
        was lost, or late) is written once. Ray does not say whether a call that failed
        as unavailable ran, so the relay may repeat one."""
        if seq <= self._delivered:
            return True
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return False
        if proc.stdin.is_closing():
            return False
        try:
            proc.stdin.write(data)
            # Before the drain: a repeat of this batch arriving meanwhile is not written.
            self._delivered = seq
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    async def kill(self) -> None:
        """SIGKILL the worker's process group."""
        if self._proc is not None and self._proc.returncode is None:
            killpg(self._proc.pid)

    async def memory(self, pss: bool) -> tuple[int, int | None] | None:
        """RSS (and PSS) of the worker's process tree; None when it is gone."""
        if self._proc is None or self._proc.returncode is not None:
            return None
        mem = await asyncio.to_thread(tree_memory, self._proc.pid, pss)
        return None if mem is None else (mem.rss, mem.pss)

"""How a worker is started and talked to: the interface, and local subprocesses over pipes.

The supervisor decides (leases, restarts, stalls, memory); a ``WorkerProcess`` only
carries out: it sends messages, yields the worker's messages until its output ends,
kills it, waits for its exit and measures its memory. ``LocalLauncher`` starts one
subprocess per slot in a session of its own (so a kill takes its whole process group);
a cluster launcher implements the same two protocols for workers on other machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from tartok_tui import messages as m
from tartok_tui.config import RunConfig
from tartok_tui.supervisor.memory import TreeMemory, tree_memory
from tartok_tui.supervisor.placement import Placement
from tartok_tui.worker.channel import EXIT_DEVICE_LOST, EXIT_OUT_OF_MEMORY
from tartok_tui.worker.options import WorkerOptions
from tartok_tui.worker.process import OPTIONS_ENV

STREAM_LIMIT = 2**22
"""Longest message line accepted from a worker (an error record's reason is bounded far below)."""

Warn = Callable[[str], None]


class WorkerStartError(RuntimeError):
    """The worker could not be started at all (not a crash of a started worker)."""


class NoResources(WorkerStartError):
    """The worker cannot be placed now (a cluster without a free GPU/CPU share): the slot
    waits ("pending") without counting it as a failure."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a launcher needs to start a slot's worker."""

    slot: int
    options: WorkerOptions
    env: dict[str, str]
    """Environment overrides (thread counts, CUDA_VISIBLE_DEVICES, the user's --worker-env)."""
    log_path: Path
    """Where the worker's stderr (its log) goes."""
    resources: dict[str, float] = field(default_factory=dict)
    """Cluster resources the worker's host asks for (empty for local workers)."""


class WorkerProcess(Protocol):
    """One started worker."""

    pid: int | None
    node: str
    """The machine it runs on ("local" for a subprocess of the supervisor)."""
    node_lost: str | None
    """Once ended: why, when it ended because its machine was lost (a cluster node that
    died, left or was preempted), else None. Such an end is no fault of the tar it held.
    Always None for a local worker: a killed local worker is a crash."""
    unreachable: str | None
    """Set when it was killed because its requests could not be delivered (a cluster
    node out of reach): not its tar's fault."""

    def send(self, msg: m.Message) -> bool:
        """Queue a message for the worker; False if it can no longer receive."""
        ...

    def messages(self, warn: Warn) -> AsyncIterator[m.Message]:
        """The worker's messages until its output ends; bad lines go to ``warn``."""
        ...

    def kill(self) -> None:
        """SIGKILL the worker and everything it started, now."""
        ...

    async def wait(self) -> int:
        """Its exit code once it has exited (negative: killed by that signal)."""
        ...

    async def memory(self, pss: bool) -> TreeMemory | None:
        """RSS of the worker's process tree, and its PSS when ``pss`` (dearer to read)."""
        ...


class WorkerLauncher(Protocol):
    async def start(self, spec: WorkerSpec) -> WorkerProcess:
        """Start a worker; raises WorkerStartError (or NoResources) if it cannot."""
        ...

    def describe(self, spec: WorkerSpec) -> str:
        """Where the worker will run, for the event log."""
        ...

    def close(self) -> None:
        """The run has ended: release what the launcher holds for it."""
        ...


def killpg(pid: int) -> None:
    """SIGKILL a worker's process group (workers lead their own session: pgid == pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def describe_exit(rc: int) -> str:
    if rc == EXIT_DEVICE_LOST:
        return f"lost its device (exit code {rc})"
    if rc == EXIT_OUT_OF_MEMORY:
        return f"ran out of device memory (exit code {rc})"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


class LocalWorkerProcess:
    """A worker subprocess of this supervisor, talking JSON lines over its stdin/stdout."""

    node = "local"
    node_lost: str | None = None
    unreachable: str | None = None

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.pid: int | None = proc.pid

    def send(self, msg: m.Message) -> bool:
        stdin = self._proc.stdin
        if self._proc.returncode is not None or stdin is None or stdin.is_closing():
            return False
        try:
            stdin.write(m.encode(msg))
        except (BrokenPipeError, ConnectionResetError):
            # The worker is exiting; its exit is handled where its stdout ends.
            return False
        return True

    async def messages(self, warn: Warn) -> AsyncIterator[m.Message]:
        stdout = self._proc.stdout
        assert stdout is not None
        while True:
            try:
                line = await stdout.readline()
            except ValueError:
                # Over the stream limit: not a message we sent; skip what we can.
                warn("oversized line from the worker ignored")
                continue
            if not line:
                return
            try:
                yield m.decode(line)
            except m.ProtocolError as exc:
                warn(f"bad line from the worker: {exc}")

    def kill(self) -> None:
        if self._proc.returncode is None and self.pid is not None:
            killpg(self.pid)

    async def wait(self) -> int:
        return await self._proc.wait()

    async def memory(self, pss: bool) -> TreeMemory | None:
        if self._proc.returncode is not None or self.pid is None:
            return None
        pid = self.pid
        return await asyncio.to_thread(tree_memory, pid, pss)


class LocalLauncher:
    """Workers as subprocesses of the supervisor (the default, one machine)."""

    def describe(self, spec: WorkerSpec) -> str:
        return spec.options.device

    def close(self) -> None:
        """Nothing to release: each subprocess ends with its slot."""

    async def start(self, spec: WorkerSpec) -> WorkerProcess:
        try:
            with open(spec.log_path, "ab") as log_file:
                proc = await spawn_worker(spec.options, spec.env, log_file)
        except OSError as exc:
            raise WorkerStartError(str(exc)) from exc
        return LocalWorkerProcess(proc)


async def spawn_worker(
    options: WorkerOptions, env: Mapping[str, str], log: IO[bytes]
) -> asyncio.subprocess.Process:
    """``python -m tartok_tui.worker`` in a session of its own (a kill takes its whole
    process group), JSON lines over its stdin/stdout, stderr to ``log``; ``env`` on top of
    this process's environment. The options travel in the environment, not on the command
    line: they may hold storage secrets, and any user of the machine can read a command
    line. Raises OSError when the process cannot be started."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tartok_tui.worker",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        env={**os.environ, **env, OPTIONS_ENV: options.to_json()},
        start_new_session=True,
        limit=STREAM_LIMIT,
    )


def worker_spec(
    config: RunConfig, placement: Placement, model_dir: Path, fingerprint: str = ""
) -> WorkerSpec:
    """What a slot's worker is started with: its options derived from the run's config,
    its placement's environment and resources, its log file; ``fingerprint``: the run
    manifest's, recorded with every tar the worker commits."""
    options = WorkerOptions.for_slot(
        config,
        slot=placement.slot,
        device=placement.worker_device,
        threads=placement.threads,
        model_dir=model_dir,
        fingerprint=fingerprint,
        gpu_sharers=placement.gpu_sharers,
    )
    return WorkerSpec(
        slot=placement.slot,
        options=options,
        env={**config.worker_env, **placement.env},
        log_path=config.worker_log_path(placement.slot),
        resources=dict(placement.resources),
    )

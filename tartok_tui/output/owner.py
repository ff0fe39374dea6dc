"""Who wrote a claim: a process on a machine, and whether that process is still alive.

A pid alone says little: another machine has its own pids, a container may have its own pid
namespace, and a dead process's pid is reused. So a process is named by its machine (host
name, kernel boot id and pid namespace) and its pid with its start time; it is known to be
gone only when the machine is this one and no process with that pid and start time exists.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

START_TOLERANCE_S = 1.0
"""Start times are read from /proc in clock ticks: the same process reads the same within this."""


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except OSError:
        return ""


@functools.cache
def this_machine() -> str:
    """This machine (and pid namespace), the same for every process that shares its pids."""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    return "/".join([socket.gethostname(), _read("/proc/sys/kernel/random/boot_id"), pid_ns])


def process_started(pid: int) -> float | None:
    """The start time of process ``pid`` (Unix time), or None when there is none."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


@dataclass(frozen=True)
class Owner:
    host: str
    """The host name, for people."""
    machine: str
    """``this_machine()`` of the writer: decides whether its pid can be looked up here."""
    pid: int
    pid_started: float | None

    @classmethod
    def me(cls) -> Owner:
        pid = os.getpid()
        return cls(socket.gethostname(), this_machine(), pid, process_started(pid))

    @property
    def here(self) -> bool:
        """Whether the writer ran on this machine, so its pid means a process here."""
        return self.machine == this_machine()

    def process_gone(self) -> bool:
        """True only when the writer ran here and its process no longer exists (its pid is
        free, or now names a process started at another time). False for another machine."""
        if not self.here:
            return False
        try:
            process = psutil.Process(self.pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
            started = float(process.create_time())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return True
        except psutil.AccessDenied:
            return False  # a process we may not inspect is alive
        if self.pid_started is None:
            return False
        return abs(started - self.pid_started) > START_TOLERANCE_S

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Owner:
        started = data.get("pid_started")
        return cls(
            host=str(data["host"]),
            machine=str(data["machine"]),
            pid=int(data["pid"]),
            pid_started=None if started is None else float(started),
        )

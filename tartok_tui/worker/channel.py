"""The worker's two ends of the pipes: messages out (``Channel``), requests in (``Control``)."""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterable

from tartok_tui import messages as m

log = logging.getLogger("tartok_tui.worker")

EXIT_OK = 0
EXIT_LOAD_FAILED = 3
"""The model could not be loaded (a LoadFailed message says why)."""
EXIT_ORPHANED = 4
"""The worker's exit code when the supervisor is gone (stdin closed, or stdout broken)."""
EXIT_DEVICE_LOST = 5
"""The device failed in a way no clip is to blame for (a lost CUDA context): the lease in
hand was given up uncommitted and a Log message said why. A fresh process (and device
context) must take over: the supervisor returns the tar to the queue and restarts the slot."""
EXIT_OUT_OF_MEMORY = 6
"""A clip ran out of device memory even alone: the lease in hand was given back with a
TarFailed of kind "oom" (nothing committed, no record), and the process exits so that the
next try starts with a clean allocator."""
ORPHAN_GRACE_S = 3.0
"""After stdin closes, seconds the worker may take to abort cleanly before it just exits."""
RESOURCES_EVERY_S = 2.0


class Channel:
    """Writes messages to the supervisor; safe from any thread."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, msg: m.Message) -> None:
        data = memoryview(m.encode(msg))
        with self._lock:
            try:
                while data:
                    written = os.write(self._fd, data)
                    data = data[written:]
            except BrokenPipeError:
                # The supervisor is gone; nobody will read our results or commit state.
                os._exit(EXIT_ORPHANED)


class Control:
    """What the supervisor asked for, updated by a reader thread on stdin.

    Flags, not a queue, for the requests the tar loop polls between batches;
    leases are queued because each must be processed.
    """

    def __init__(self) -> None:
        self.leases: queue.Queue[m.Lease] = queue.Queue()
        self.paused = threading.Event()
        self.stop = threading.Event()
        self.abort = threading.Event()
        self.cleanup = threading.Event()
        self.closed = threading.Event()
        self._changed = threading.Condition()

    def start_reader(self, stream: Iterable[bytes]) -> threading.Thread:
        thread = threading.Thread(target=self._read, args=(stream,), name="stdin", daemon=True)
        thread.start()
        return thread

    def wait_change(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def handle(self, msg: m.Message) -> None:
        if isinstance(msg, m.Lease):
            self.leases.put(msg)
        elif isinstance(msg, m.Pause):
            self.paused.set()
        elif isinstance(msg, m.Resume):
            self.paused.clear()
        elif isinstance(msg, m.Stop):
            self.stop.set()
        elif isinstance(msg, m.Abort):
            self.abort.set()
        elif isinstance(msg, m.Cleanup):
            self.cleanup.set()
        else:
            log.warning("ignoring a message the worker does not take: %r", msg)
        self._notify()

    def _read(self, stream: Iterable[bytes]) -> None:
        for line in stream:
            if not line.strip():
                continue
            try:
                msg = m.decode(line)
            except m.ProtocolError as exc:
                log.error("bad message from the supervisor: %s", exc)
                continue
            self.handle(msg)
        # EOF: the supervisor exited or was killed. Abort the current tar and leave;
        # if the model is mid-batch and cannot notice in time, exit regardless.
        log.warning("stdin closed: the supervisor is gone, exiting")
        self.closed.set()
        self.abort.set()
        self._notify()
        timer = threading.Timer(ORPHAN_GRACE_S, os._exit, args=(EXIT_ORPHANED,))
        timer.daemon = True
        timer.start()


def gpu_resources(device: str) -> m.Resources:
    if not device.startswith("cuda"):
        return m.Resources()
    import torch

    return m.Resources(
        gpu_reserved_mb=torch.cuda.memory_reserved() / 2**20,
    )

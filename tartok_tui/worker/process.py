"""The worker process: messages in on stdin, tars processed, messages out on stdout.

stdout carries nothing but messages: at start-up the real stdout is duplicated
for the message channel and fd 1 is pointed at stderr, so a library that prints
cannot corrupt the pipe. Logs go to stderr (the supervisor sends them to a log
file per slot). When stdin closes the supervisor is gone and the worker exits.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tartok_tui import messages as m
from tartok_tui.config import DEFAULT_AUDIO_EXTS

log = logging.getLogger("tartok_tui.worker")

EXIT_OK = 0
EXIT_LOAD_FAILED = 3
EXIT_ORPHANED = 4
ORPHAN_GRACE_S = 3.0
"""After stdin closes, seconds the worker may take to abort cleanly before it just exits."""
RESOURCES_EVERY_S = 2.0


@dataclass(frozen=True)
class WorkerOptions:
    slot: int
    device: str
    precision: str
    model_dir: Path
    output_dir: Path
    input_dir: Path
    threads: int
    decode_workers: int
    streams: int
    """Batches run at once; 0: the tokenizer's default (one per thread on the CPU)."""
    batch_seconds: float
    max_duration: float
    audio_exts: tuple[str, ...]


def parse_args(argv: list[str] | None = None) -> WorkerOptions:
    p = argparse.ArgumentParser(prog="python -m tartok_tui.worker")
    p.add_argument("--slot", type=int, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--input-dir", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--decode-workers", type=int, default=0, help="0: from --threads")
    p.add_argument("--streams", type=int, default=0, help="0: the tokenizer's default")
    p.add_argument("--batch-seconds", type=float, default=240.0)
    p.add_argument("--max-duration", type=float, default=60.0)
    p.add_argument("--audio-exts", nargs="+", default=list(DEFAULT_AUDIO_EXTS))
    a = p.parse_args(argv)
    threads = max(1, a.threads)
    # Decoding is cheap next to the model (1,500x real time vs ~10x on CPU): a
    # couple of threads keep the model fed without stealing its cores.
    decode_workers = a.decode_workers if a.decode_workers > 0 else max(1, min(4, threads // 2))
    return WorkerOptions(
        slot=a.slot,
        device=a.device,
        precision=a.precision,
        model_dir=a.model_dir,
        output_dir=a.output_dir,
        input_dir=a.input_dir,
        threads=threads,
        decode_workers=decode_workers,
        streams=max(0, a.streams),
        batch_seconds=a.batch_seconds,
        max_duration=a.max_duration,
        audio_exts=tuple(ext.lstrip(".").lower() for ext in a.audio_exts),
    )


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

    def start_reader(self, stream) -> threading.Thread:
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

    def _read(self, stream) -> None:
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


def redirect_stdout_to_stderr() -> int:
    """Return a private fd for messages; fd 1 and sys.stdout now go to stderr."""
    sys.stdout.flush()
    msg_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return msg_fd


def die_with_parent() -> None:
    """Ask Linux to SIGKILL us when the supervisor dies (a backup to the stdin EOF)."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except OSError as exc:
        log.warning("prctl unavailable: %s", exc)


def gpu_resources(device: str) -> m.Resources:
    if not device.startswith("cuda"):
        return m.Resources()
    import torch

    return m.Resources(
        gpu_allocated_mb=torch.cuda.memory_allocated() / 2**20,
        gpu_reserved_mb=torch.cuda.memory_reserved() / 2**20,
    )


def main(argv: list[str] | None = None) -> int:
    from tartok_tui.codec.allocator import keep_freed_memory

    # Before any thread allocates, so the model's streams share the one untrimmed heap.
    keep_freed_memory()
    msg_fd = redirect_stdout_to_stderr()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s worker[%(process)d] %(levelname)s %(message)s",
    )
    die_with_parent()
    opts = parse_args(argv)
    channel = Channel(msg_fd)
    channel.send(m.Hello(pid=os.getpid(), device=opts.device))
    control = Control()
    control.start_reader(sys.stdin.buffer)

    started = time.monotonic()
    try:
        # Heavy imports after the hello, so the supervisor sees the process alive at once;
        # inside the try, so a broken install is reported as a load failure too.
        from tartok_tui.worker.faults import Faults
        from tartok_tui.worker.pipeline import LeaseRunner, load_tokenizer

        faults = Faults.from_env()
        faults.on_load()
        tokenizer = load_tokenizer(opts)
    except Exception as exc:
        log.exception("model load failed")
        channel.send(m.LoadFailed(reason=f"{type(exc).__name__}: {exc}"))
        return EXIT_LOAD_FAILED
    channel.send(
        m.Ready(
            load_seconds=time.monotonic() - started, device=opts.device, precision=opts.precision
        )
    )
    log.info("slot %d ready on %s in %.1f s", opts.slot, opts.device, time.monotonic() - started)
    runner = LeaseRunner(tokenizer, opts, control, channel, faults)
    return serve(runner, control, channel, opts)


def serve(runner, control: Control, channel: Channel, opts: WorkerOptions) -> int:
    """Take leases until told to stop or abort, or until stdin closes."""
    from tartok_tui.worker.pipeline import LeaseAborted

    reported_paused = False
    last_resources = 0.0
    while True:
        if control.abort.is_set():
            return EXIT_ORPHANED if control.closed.is_set() else EXIT_OK
        if control.cleanup.is_set():
            runner.cleanup()
        if control.paused.is_set() != reported_paused:
            reported_paused = control.paused.is_set()
            channel.send(m.StateChanged("paused" if reported_paused else "idle"))
        now = time.monotonic()
        if now - last_resources >= RESOURCES_EVERY_S:
            channel.send(gpu_resources(opts.device))
            last_resources = now
        if control.paused.is_set():
            # A paused worker takes no lease; one already queued waits for the resume.
            control.wait_change(0.5)
            continue
        try:
            lease = control.leases.get_nowait()
        except queue.Empty:
            if control.stop.is_set():
                return EXIT_OK
            control.wait_change(0.5)
            continue
        try:
            runner.run(lease)
        except LeaseAborted:
            log.info("lease %d aborted (%s)", lease.lease_id, lease.tar_path)
            return EXIT_ORPHANED if control.closed.is_set() else EXIT_OK
        reported_paused = False

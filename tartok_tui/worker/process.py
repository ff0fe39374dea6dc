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
import time
from typing import TYPE_CHECKING

from tartok_tui import messages as m
from tartok_tui.storage import ThrottleGauge
from tartok_tui.worker.channel import (
    EXIT_DEVICE_LOST,
    EXIT_LOAD_FAILED,
    EXIT_OK,
    EXIT_ORPHANED,
    EXIT_OUT_OF_MEMORY,
    RESOURCES_EVERY_S,
    Channel,
    Control,
    gpu_resources,
)
from tartok_tui.worker.heartbeat import Heartbeat, ProgressCounter
from tartok_tui.worker.options import WorkerOptions

if TYPE_CHECKING:  # imported at run time after the hello (see main)
    from tartok_tui.worker.pipeline import LeaseRunner

log = logging.getLogger("tartok_tui.worker")
LOG_FORMAT = "%(asctime)s worker[%(process)d] %(levelname)s %(message)s"


OPTIONS_ENV = "TARTOK_WORKER_OPTIONS"
"""The environment variable that carries the WorkerOptions JSON when ``--options`` is not
given: storage options may hold secrets, and a command line is visible to every user."""


def parse_args(argv: list[str] | None = None) -> WorkerOptions:
    p = argparse.ArgumentParser(prog="python -m tartok_tui.worker")
    p.add_argument(
        "--options",
        default=None,
        help=f"WorkerOptions as JSON (the supervisor writes it; default: ${OPTIONS_ENV})",
    )
    given = p.parse_args(argv).options
    if given is None:
        given = os.environ.pop(OPTIONS_ENV, None)
        if given is None:
            p.error(f"--options or ${OPTIONS_ENV} is required")
    return WorkerOptions.from_json(given)


def redact_logs(opts: WorkerOptions) -> None:
    """Every log line of this process goes out without secrets (storage options, signed
    URL parameters, tokens)."""
    from tartok_tui.storage.urls import RedactingFormatter

    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(LOG_FORMAT, opts.storage_options))


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


def throttle_gauge(channel: Channel) -> ThrottleGauge:
    """The worker's throttled calls: one event-log line per episode (the heartbeat carries
    the state)."""

    def episode(what: str) -> None:
        log.warning("throttled by the store (%s): waiting", what)
        channel.send(m.Log("warning", f"throttled by the store ({what}): waiting"))

    return ThrottleGauge(on_episode=episode)


def main(argv: list[str] | None = None) -> int:
    from tartok_tui.codec.allocator import keep_freed_memory

    # Before any thread allocates, so the model's streams share the one untrimmed heap.
    keep_freed_memory()
    msg_fd = redirect_stdout_to_stderr()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    die_with_parent()
    opts = parse_args(argv)
    redact_logs(opts)
    channel = Channel(msg_fd)
    channel.send(m.Hello(pid=os.getpid(), device=opts.device))
    # Alive from here on, loading included; the counter moves only with real work.
    counter = ProgressCounter()
    gauge = throttle_gauge(channel)
    Heartbeat(channel, counter, gauge=gauge).start()
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
    log.info(
        "slot %d ready on %s in %.1f s: %d torch threads, %d streams, %d decode threads",
        opts.slot,
        opts.device,
        time.monotonic() - started,
        opts.threads,
        tokenizer.streams,
        opts.resolved_decode_workers,
    )
    runner = LeaseRunner(tokenizer, opts, control, channel, faults, counter, gauge)
    return serve(runner, control, channel, opts)


def serve(runner: LeaseRunner, control: Control, channel: Channel, opts: WorkerOptions) -> int:
    """Take leases until told to stop or abort, or until stdin closes."""
    from tartok_tui.codec.errors import ClipOutOfMemory
    from tartok_tui.worker.pipeline import LeaseAborted, is_device_failure

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
        except ClipOutOfMemory as exc:
            give_back_out_of_memory(channel, lease, runner.redact(str(exc)))
            return EXIT_OUT_OF_MEMORY
        except Exception as exc:
            if not is_device_failure(exc):
                raise
            report_device_lost(channel, opts, lease, exc)
            return EXIT_DEVICE_LOST
        reported_paused = False


def give_back_out_of_memory(channel: Channel, lease: m.Lease, reason: str) -> None:
    """Give the lease back uncommitted as out of memory; the caller then exits, so that
    the tar's next try (here or elsewhere) has a fresh process and a clean allocator."""
    log.error("out of memory on %s: %s; giving it back, the worker exits", lease.tar_path, reason)
    channel.send(m.TarFailed(lease.lease_id, lease.tar_path, reason, kind="oom"))


def report_device_lost(
    channel: Channel, opts: WorkerOptions, lease: m.Lease, exc: BaseException
) -> None:
    """Log a lost device and tell the supervisor why this worker is about to exit."""
    log.error("device %s lost on %s", opts.device, lease.tar_path, exc_info=exc)
    first_line = (str(exc).strip().splitlines() or [""])[0]
    channel.send(
        m.Log(
            "error",
            f"device {opts.device} lost ({type(exc).__name__}: {first_line}); "
            f"{os.path.basename(lease.tar_path)} given back uncommitted, the worker exits",
        )
    )

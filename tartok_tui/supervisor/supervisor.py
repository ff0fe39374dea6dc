"""The supervisor: leases tars to workers, restarts them, watches them, reports state.

Runs inside any asyncio loop (Textual's, or ``asyncio.run`` headless). All state lives
on the loop's thread; the control methods are plain synchronous calls meant to be made
from that thread (the dashboard's handlers, the memory watch).

Exactly once: a tar's output appears only when its worker commits it, so a tar is either
done (skipped on the next run) or redone from scratch. The rules for what becomes of a
tar when its lease ends are in ``queue.TarQueue``; where and how a worker runs is behind
``process.WorkerLauncher``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from tartok_tui import messages as m
from tartok_tui.config import RunConfig
from tartok_tui.exit_codes import ExitCode
from tartok_tui.output.claim import OutputClaim
from tartok_tui.storage import Location, location_name, redact_text
from tartok_tui.supervisor.claim_watch import keep_claim
from tartok_tui.supervisor.commits import BatchedCommits
from tartok_tui.supervisor.controls import RunControls
from tartok_tui.supervisor.gpus import GpuMonitor
from tartok_tui.supervisor.isolation import JournalStore
from tartok_tui.supervisor.leasing import Leasing
from tartok_tui.supervisor.memory import MemoryWatch
from tartok_tui.supervisor.process import (
    LocalLauncher,
    NoResources,
    WorkerLauncher,
    WorkerProcess,
    WorkerStartError,
    describe_exit,
    worker_spec,
)
from tartok_tui.supervisor.queue import TarQueue, TarStatus
from tartok_tui.supervisor.restart import RestartPolicy
from tartok_tui.supervisor.run_output import RunOutput
from tartok_tui.supervisor.slot import ActiveLease, ExitIntent, Slot, new_slot
from tartok_tui.supervisor.snapshot import ThroughputHistory, run_view, slot_totals
from tartok_tui.supervisor.startup import StartFailed, start_run
from tartok_tui.supervisor.summary import RunSummary, build_summary, decide_exit
from tartok_tui.supervisor.views import Event, RunView, WorkerState
from tartok_tui.worker.channel import EXIT_DEVICE_LOST

log = logging.getLogger("tartok_tui.supervisor")

MAX_EVENTS = 500
WATCH_EVERY_S = 1.0
"""Stall checks, throughput samples and GPU readings."""
PLACEMENT_RETRY_S = 5.0
"""Cluster mode: how often a slot that could not be placed tries again."""

EventCallback = Callable[[Event], None]


class Supervisor(Leasing, RunControls, BatchedCommits):
    """Runs the workers of one ``tartok-tui run``.

    ``tars``: the tars to process (absolute paths inside ``config.input_dir``); None
    discovers them from the config. ``on_event``: called on the loop's thread with every
    Event (the statistics lines included). ``launcher``: where workers run (default:
    local subprocesses). ``claim``: the run's claim on its tars (see ``claim_watch``).
    """

    def __init__(
        self,
        config: RunConfig,
        tars: list[Location] | None = None,
        on_event: EventCallback | None = None,
        launcher: WorkerLauncher | None = None,
        gpu_monitor: GpuMonitor | None = None,
        ignored: tuple[str, ...] = (),
        claim: OutputClaim | None = None,
    ) -> None:
        self.config = config
        self._claim = claim
        self._given_tars = tars
        self._given_ignored = ignored
        self._on_event = on_event
        self._launcher: WorkerLauncher = launcher if launcher is not None else LocalLauncher()
        self._gpu_monitor = gpu_monitor
        self._events: deque[Event] = deque(maxlen=MAX_EVENTS)
        self._slots: list[Slot] = []
        self._queue: TarQueue[Location] = TarQueue([], poison_threshold=config.poison_threshold)
        self._output = RunOutput(config, self._event)
        self._access = self._output.access
        self._journals = JournalStore(config.local_output_dir, config.input_dir, self._event)
        self._started_at = time.time()
        self._started_mono = time.monotonic()
        self._stopping = False
        self._finished = False
        self._halted: tuple[int, str] | None = None
        """Set when the run stopped itself (e.g. the output is full): its exit code and why."""
        self._exit_reason: str | None = None
        self._stop_timer: asyncio.TimerHandle | None = None
        self._memory = MemoryWatch(int(config.memory_limit_gb * 2**30), self)
        self._throughput = ThroughputHistory()
        self._gpus: tuple = ()
        self._next_stats = config.stats_every
        self._model_dir: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._init_commits()

    # ------------------------------------------------------------------ run

    async def run(self) -> RunSummary:
        """Process every tar; returns the summary (also written to the output dir)."""
        self._loop = asyncio.get_running_loop()
        self._started_at = time.time()
        self._started_mono = time.monotonic()
        self._output.bind(self._loop)
        try:
            start = await start_run(
                self.config, self._given_tars, self._output, self._given_ignored
            )
        except StartFailed as exc:
            self._halted = (exc.code, exc.reason)
            return self._finish()
        validated, done = start.validated, start.done
        self._model_dir = validated.model_dir
        for note in self._claim.notes if self._claim is not None else ():
            self._event("warning", None, note)
        self._queue = TarQueue(validated.tars, done, poison_threshold=self.config.poison_threshold)
        await self._restore_journals(validated.tars, done)
        self._event(
            "info",
            None,
            f"{len(validated.tars)} tars, {len(done)} already done, "
            f"{self._queue.pending} to process",
        )
        policy = self._new_policy
        # No more workers than tars to do: each loads a model for nothing otherwise.
        placements = validated.placements[: max(1, self._queue.pending)]
        self._slots = [new_slot(p, policy()) for p in placements]
        if self._gpu_monitor is None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            self._gpu_monitor = GpuMonitor(
                [p.device for p in placements],
                visible.split(",") if visible else None,
            )
        self.config.logs_path.mkdir(parents=True, exist_ok=True)
        watchers: list[asyncio.Task[None]] = []
        if self._queue.pending and not self._stopping:
            for slot in self._slots:
                slot.task = asyncio.create_task(self._guarded_slot(slot))
            watchers = [
                asyncio.create_task(self._watch_memory()),
                asyncio.create_task(self._watch()),
            ]
            if self._claim is not None:
                watchers.append(asyncio.create_task(keep_claim(self._claim, self._halt, self)))
            committing = asyncio.create_task(self._commit_when_due())
            await self._wait_slots()
            await self._close_commits(committing)
        else:
            for slot in self._slots:
                slot.phase = WorkerState.DONE
        for task in watchers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._stop_timer is not None:
            self._stop_timer.cancel()
        self._gpu_monitor.close()
        await self._journals.close()
        self._launcher.close()
        self._output.sweep_partials("workers killed in this run", own=True)
        summary = self._finish()
        if self.config.output_is_url:
            await asyncio.to_thread(self._output.upload_summary)
        return summary

    async def _restore_journals(self, tars: list[Location], done: list[Location]) -> None:
        """What earlier runs' isolation journals decided, for tars isolated again."""
        skipped = set(done)
        todo = [t for t in tars if t not in skipped]
        journals, warnings = await asyncio.to_thread(self._journals.load, todo, done)
        for tar, decided in journals.items():
            self._queue.restore(tar, decided)
        for warning in warnings:
            self._event("warning", None, warning)

    def _finish(self) -> RunSummary:
        summary = self._summary()
        self._finished = True
        self._exit_reason = summary.exit_reason
        level = "info" if summary.exit_code == ExitCode.OK else "error"
        self._event(level, None, f"run finished: {summary.exit_reason}")
        self._output.write_summary(summary)
        return summary

    def _new_policy(self) -> RestartPolicy:
        c = self.config
        return RestartPolicy(c.backoff_initial_s, c.backoff_max_s, c.crash_window_s, c.crash_limit)

    async def _wait_slots(self) -> None:
        # A restart of a finished (DONE/FATAL) slot adds a new task, so loop until none run.
        while True:
            tasks = [s.task for s in self._slots if s.task is not None and not s.task.done()]
            if not tasks:
                return
            await asyncio.wait(tasks)

    # ------------------------------------------------------------------ one slot

    async def _guarded_slot(self, slot: Slot) -> None:
        """A slot's life; a bug in it makes the slot FATAL with the error said, instead of a
        task that dies unseen while the run waits on its tar."""
        try:
            await self._slot_main(slot)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("slot %d failed", slot.n)
            lease = slot.lease_ended()
            if lease is not None:
                self._lease_lost(slot, lease, ExitIntent.KILL)
            if slot.process is not None:
                slot.process.kill()
            self._fatal(slot, f"supervisor error: {type(exc).__name__}: {exc}")

    async def _slot_main(self, slot: Slot) -> None:
        while True:
            if self._stopping or slot.intent == ExitIntent.STOP or not self._queue.work_remaining():
                slot.phase = WorkerState.DONE
                return
            try:
                rc, node_lost = await self._run_worker(slot)
            except NoResources as exc:
                await self._wait_for_placement(slot, str(exc))
                continue
            intent = slot.intent
            lease = slot.lease_ended()
            if lease is not None:
                self._lease_lost(
                    slot, lease, intent, device_lost=rc == EXIT_DEVICE_LOST, node_lost=node_lost
                )
            if self._stopping:
                slot.phase = WorkerState.DONE
                return
            if node_lost is not None and intent in (ExitIntent.NONE, ExitIntent.STALL):
                # The machine went, not the worker: no backoff, no crash-loop count; the
                # next start waits (PENDING) until some node has room.
                slot.stats.restarts += 1
                continue
            if intent == ExitIntent.RECYCLE:
                # However the recycled worker ended, the memory watch may act again.
                self._memory.recycle_finished(slot.n)
            if intent == ExitIntent.STOP:
                slot.phase = WorkerState.DONE
                return
            if intent in (ExitIntent.KILL, ExitIntent.RESTART) or (
                rc == 0 and intent == ExitIntent.RECYCLE
            ):
                slot.stats.restarts += 1
                continue
            if rc == 0 and intent != ExitIntent.STALL:
                continue
            if not await self._after_failure(slot, rc, intent, lease):
                return
            slot.stats.restarts += 1

    async def _after_failure(
        self, slot: Slot, rc: int, intent: ExitIntent, lease: ActiveLease | None
    ) -> bool:
        """A crash or a stall: back off and return True to restart, or make the slot FATAL
        and return False."""
        if intent in (ExitIntent.STALL, ExitIntent.UNREACHABLE):
            reason = slot.last_error or str(intent)
        else:
            reason = slot.load_failed or describe_exit(rc) + (
                f" while on {location_name(lease.tar)}" if lease is not None else ""
            )
        slot.last_error = reason
        now = time.monotonic()
        never_ready = slot.phase in (WorkerState.STARTING, WorkerState.LOADING)
        if slot.load_failed is not None and slot.load_failed.startswith("could not start"):
            self._fatal(slot, reason)
            return False
        if slot.load_failed is not None or (never_ready and rc > 0 and intent != ExitIntent.STALL):
            self._fatal(slot, f"model load failed: {reason}")
            return False
        slot.policy.record_failure(now)
        if slot.policy.crash_loop(now):
            self._fatal(
                slot,
                f"crash loop: {slot.policy.failures_in_window(now)} failures within "
                f"{self.config.crash_window_s:g} s; last: {reason}",
            )
            return False
        delay = slot.policy.next_delay()
        what = "worker stalled" if intent == ExitIntent.STALL else "worker died"
        self._event("warning", slot.n, f"{what} ({reason}); restarting in {delay:.1f} s")
        if intent != ExitIntent.STALL:
            slot.phase = WorkerState.BACKOFF
        slot.backoff_until = time.time() + delay
        slot.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(slot.wake.wait(), delay)
        slot.backoff_until = None
        return True

    async def _wait_for_placement(self, slot: Slot, reason: str) -> None:
        """Cluster mode: no node can take the worker now. Not a failure: the slot is
        PENDING and tries again every PLACEMENT_RETRY_S (a node may join) until the
        work is done or the run stops."""
        if slot.phase != WorkerState.PENDING:
            self._event("warning", slot.n, f"pending: {reason}; trying again")
        slot.phase = WorkerState.PENDING
        slot.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(slot.wake.wait(), PLACEMENT_RETRY_S)

    def _fatal(self, slot: Slot, reason: str) -> None:
        slot.phase = WorkerState.FATAL
        slot.last_error = reason
        self._event("error", slot.n, f"slot is FATAL: {reason}")
        if all(s.phase == WorkerState.FATAL for s in self._slots):
            self._exit_reason = f"every worker slot is fatal: {reason}"

    async def _run_worker(self, slot: Slot) -> tuple[int, str | None]:
        """Start one worker and talk to it until it exits; returns its exit code, and why
        its machine was lost when that is how it ended (``WorkerProcess.node_lost``)."""
        assert self._model_dir is not None
        spec = worker_spec(self.config, slot.placement, self._model_dir, self._output.fingerprint)
        if slot.phase != WorkerState.PENDING:
            slot.phase = WorkerState.STARTING
        try:
            process = await self._launcher.start(spec)
        except NoResources:
            raise
        except WorkerStartError as exc:
            slot.load_failed = f"could not start the worker: {exc}"
            return 1, None
        slot.started(process, time.monotonic())
        where = self._launcher.describe(spec)
        self._event("info", slot.n, f"worker started (pid {process.pid}, {where})")
        if slot.pause_wanted:
            process.send(m.Pause())
        if self._stopping:
            slot.expect_exit(ExitIntent.SHUTDOWN)
            process.send(m.Abort())
        elif not self._queue.work_remaining():
            # Placed only after the work ran out (a cluster slot that waited for a node).
            slot.expect_exit(ExitIntent.DRAIN)
            process.send(m.Abort())
        await self._talk(slot, process)
        rc = await process.wait()
        if process.unreachable is not None:
            slot.last_error = f"unreachable: {process.unreachable}"
            slot.expect_exit(ExitIntent.UNREACHABLE)
        slot.exited()
        return rc, process.node_lost

    async def _talk(self, slot: Slot, process: WorkerProcess) -> None:
        def warn(text: str) -> None:
            self._event("warning", slot.n, text)

        async for msg in process.messages(warn):
            slot.heard(msg, time.monotonic())
            self._handle(slot, msg)

    # ------------------------------------------------------------------ messages

    def _handle(self, slot: Slot, msg: m.Message) -> None:
        n = slot.n
        lease = slot.lease
        if isinstance(msg, m.Hello):
            slot.hello()
        elif isinstance(msg, m.Ready):
            slot.loaded()
            self._event("info", n, f"model loaded in {msg.load_seconds:.1f} s")
            self._dispatch()
        elif isinstance(msg, m.LoadFailed):
            slot.load_failed = self._redact(msg.reason)
        elif isinstance(msg, (m.TarStarted, m.Progress)):
            if lease is not None and lease.lease_id == msg.lease_id:
                if isinstance(msg, m.Progress):
                    lease.progress = msg
                if msg.samples_expected is not None:
                    lease.expected = msg.samples_expected
                    self._queue.set_expected(lease.lease_id, msg.samples_expected)
                self._maybe_log_stats()
        elif isinstance(msg, m.IsolationBegin):
            if not self._queue.sample_begun(msg.lease_id, msg.index, msg.key):
                self._event("warning", n, f"isolation message for no isolated lease: {msg!r}")
        elif isinstance(msg, m.IsolationDone):
            self._sample_decided(slot, msg)
        elif isinstance(msg, m.SampleError):
            what = f"sample {msg.key}" if msg.key is not None else "tar"
            name = Path(msg.tar_path).name
            self._event("warning", n, f"{name}: {what}: {msg.stage}: {msg.reason}")
        elif isinstance(msg, m.TarDone):
            self._tar_done(slot, msg)
        elif isinstance(msg, m.TarFailed):
            self._tar_failed(slot, msg)
        elif isinstance(msg, m.Resources):
            slot.gpu_mb = msg.gpu_reserved_mb
        elif isinstance(msg, m.StateChanged):
            before = slot.phase
            slot.worker_says(msg.state, time.monotonic())
            if slot.phase == WorkerState.PAUSED and before != WorkerState.PAUSED:
                self._event("info", n, "paused (no batch running)")
        elif isinstance(msg, m.Log):
            self._event(msg.level, n, msg.message)
        elif not isinstance(msg, m.Heartbeat):
            self._event("warning", n, f"unexpected message from the worker: {msg!r}")

    # ------------------------------------------------------------------ watching

    async def _watch_memory(self) -> None:
        while True:
            await asyncio.sleep(self.config.memory_check_s)
            await self.check_memory()

    async def check_memory(self) -> None:
        """Measure every worker tree; cleanup, then recycle the biggest, when over the limit."""
        alive = [s for s in self._slots if s.process is not None]
        await self._memory.check(alive, time.monotonic())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            self.check_stalls()
            totals = [slot_totals(s) for s in self._slots]
            self._throughput.sample(time.monotonic(), sum(t[2] for t in totals))
            if self._gpu_monitor is not None and self._gpu_monitor.devices:
                self._gpus = await asyncio.to_thread(self._gpu_monitor.read)

    def check_stalls(self, now: float | None = None) -> None:
        """Kill every worker that has made no progress past its allowance."""
        now = time.monotonic() if now is None else now
        for slot in self._slots:
            idle = slot.stalled_for(now, self.config.stall_timeout_s)
            if idle is None or slot.intent == ExitIntent.STALL:
                continue
            on = (
                f"on {location_name(slot.lease.tar)}" if slot.lease is not None else "while loading"
            )
            reason = f"stalled: no progress for {idle:.0f} s {on}"
            slot.last_error = reason
            self._event("error", slot.n, reason)
            slot.expect_exit(ExitIntent.STALL)
            assert slot.process is not None
            slot.process.kill()

    # ------------------------------------------------------------------ stats and views

    def _maybe_log_stats(self) -> None:
        total = sum(slot_totals(s)[0] for s in self._slots)
        if total < self._next_stats:
            return
        elapsed = time.monotonic() - self._started_mono
        self._event(
            "info",
            None,
            f"total requests: {total}, total time: {elapsed:.2f} s, "
            f"average time: {elapsed / total:.4f} s/request",
        )
        while self._next_stats <= total:
            self._next_stats += self.config.stats_every

    def snapshot(self) -> RunView:
        return run_view(
            self._slots,
            self._queue,
            self.config.input_dir,
            started_at=self._started_at,
            memory=(self._memory.total_bytes, self._memory.limit_bytes),
            events=tuple(self._events),
            state=(self._finished, self._stopping, self._exit_reason),
            throughput=self._throughput,
            gpus=self._gpus,
        )

    def _redact(self, text: str) -> str:
        """``text`` without secrets (storage options, signed URL parameters, tokens)."""
        return redact_text(text, self.config.storage_options)

    def _event(self, level: str, slot: int | None, message: str) -> None:
        # Every line of the event log, dashboard and printer passes here.
        message = self._redact(message)
        event = Event(time=time.time(), level=level, slot=slot, message=message)
        self._events.append(event)
        if self._on_event is not None:
            self._on_event(event)

    def report(self, level: str, slot: int | None, message: str) -> None:
        """An event from a policy acting on the run (the memory watch)."""
        self._event(level, slot, message)

    # ------------------------------------------------------------------ summary

    def _summary(self) -> RunSummary:
        counts = self._queue.counts()
        unfinished = counts[TarStatus.PENDING] + counts[TarStatus.LEASED]
        code, reason = decide_exit(
            interrupted=self._stopping,
            halted=self._halted,
            all_fatal=bool(self._slots) and all(s.phase == WorkerState.FATAL for s in self._slots),
            fatal_reason=self._exit_reason,
            failed=counts[TarStatus.FAILED],
            unfinished=unfinished,
        )
        return build_summary(
            int(code),
            reason,
            self._queue,
            self.snapshot(),
            self.config.input_dir,
            self._started_at,
        )

"""The supervisor: leases tars to worker subprocesses, restarts them, reports state.

Runs inside any asyncio loop (Textual's, or ``asyncio.run`` headless). All
state lives on the loop's thread; the control methods are plain synchronous
calls meant to be made from that thread (the dashboard's event handlers).

Exactly once: a tar's output file appears only when its worker commits it, so
a tar is either done (skipped on the next run) or redone from scratch. A
worker's lease is returned to the front of the queue whenever the worker exits
without committing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tartok_tui import messages as m
from tartok_tui.config import ConfigError, RunConfig
from tartok_tui.exit_codes import ExitCode
from tartok_tui.output.paths import (
    relative_tar_path,
    remove_stale_partials,
    summary_path,
    tar_output_paths,
)
from tartok_tui.supervisor.memory import MemoryGuard, needs_pss, tree_memory
from tartok_tui.supervisor.placement import Placement, plan_slots
from tartok_tui.supervisor.restart import RestartPolicy
from tartok_tui.supervisor.summary import RunSummary, TarResult, write_summary
from tartok_tui.supervisor.views import Event, RunView, WorkerState, WorkerView
from tartok_tui.worker.options import WorkerOptions

MAX_EVENTS = 500
MAX_TAR_KILLS_EXTRA = 5
"""An isolated tar may kill this many more workers (one poison sample each) before it is
given up as failed: each isolated crash marks one sample, so a tar needing more is
likely killing workers for another reason."""
PRECISIONS = ("fp32", "bf16", "fp16")

EventCallback = Callable[[Event], None]


# ---------------------------------------------------------------- validation


@dataclass(frozen=True)
class ValidatedRun:
    tars: list[Path]
    model_dir: Path
    placements: list[Placement]


def validate(config: RunConfig, tars: list[Path] | None = None) -> ValidatedRun:
    """Check every argument before any worker starts; raises ConfigError."""
    # Imported here: discovery and model validation pull in torch via codec.
    from tartok_tui.codec.model_dir import ModelDirError, read_config
    from tartok_tui.hub import ModelSourceError, resolve_model_dir
    from tartok_tui.shards.discover import InputError, discover_tars

    if config.precision not in PRECISIONS:
        raise ConfigError(
            f"--precision {config.precision!r}: expected one of {', '.join(PRECISIONS)}"
        )
    for name in ("batch_seconds", "max_duration", "memory_limit_gb", "stop_timeout_s"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    if config.stats_every < 1 or config.crash_limit < 1 or config.poison_threshold < 1:
        raise ConfigError("--stats-every, crash limit and poison threshold must be at least 1")
    if config.from_index < 0 or (
        config.to_index is not None and config.to_index <= config.from_index
    ):
        raise ConfigError(f"bad tar range [{config.from_index}, {config.to_index})")
    if not config.input_dir.is_dir():
        raise ConfigError(f"input directory does not exist: {config.input_dir}")
    if tars is None:
        try:
            tars = discover_tars(
                config.input_dir, config.from_index, config.to_index, config.recursive
            )
        except InputError as exc:
            raise ConfigError(str(exc)) from exc
        if not tars:
            raise ConfigError(
                f"no tars in {config.input_dir} for range [{config.from_index}, "
                f"{config.to_index if config.to_index is not None else 'end'})"
                + ("" if config.recursive else " (subdirectories need --recursive)")
            )
    for tar in tars:
        try:
            tar_output_paths(config.output_dir, config.input_dir, tar)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    try:
        model_dir = resolve_model_dir(config.model_dir)
        read_config(model_dir)
    except (ModelSourceError, ModelDirError) as exc:
        raise ConfigError(f"model dir: {exc}") from exc
    _check_writable(config.output_dir, "output directory")
    _check_writable(config.logs_path, "log directory")
    placements = plan_slots(config)
    return ValidatedRun(tars=list(tars), model_dir=model_dir, placements=placements)


def _check_writable(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} is not writable: {path} ({exc})") from exc


# ---------------------------------------------------------------- state


@dataclass
class _Lease:
    lease_id: int
    tar: Path
    isolate: bool
    started_at: float
    expected: int | None = None
    progress: m.Progress | None = None


@dataclass
class _Slot:
    placement: Placement
    policy: RestartPolicy
    state: WorkerState = WorkerState.STARTING
    proc: asyncio.subprocess.Process | None = None
    pid: int | None = None
    task: asyncio.Task | None = None
    hello: bool = False
    ready: bool = False
    lease: _Lease | None = None
    exiting: bool = False
    """Told to stop or abort: takes no new lease."""
    paused: bool = False
    worker_state: str | None = None
    """What the worker last said about itself (paused, running, idle)."""
    user_stop: bool = False
    kill_requested: bool = False
    restart_requested: bool = False
    recycle: bool = False
    load_failed: str | None = None
    fatal_reason: str | None = None
    backoff_until: float | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # stats over the slot's life (committed tars only)
    tars_done: int = 0
    samples: int = 0
    errors: int = 0
    audio_s: float = 0.0
    model_s: float = 0.0
    wall_s: float = 0.0
    batches: int = 0
    restarts: int = 0
    last_error: str | None = None
    mem_bytes: int = 0
    gpu_mb: float = 0.0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


@dataclass
class _TarState:
    status: str = "pending"
    kills: int = 0
    isolated: bool = False
    retry_crashed: bool = False
    """The last isolated attempt was killed on purpose: do not blame its sample."""
    samples: int = 0
    errors: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    reason: str | None = None


class Supervisor:
    """Runs the workers of one ``tartok-tui run``.

    ``tars``: the tars to process (absolute paths inside ``config.input_dir``);
    None discovers them from the config. ``on_event``: called on the loop's
    thread with every Event (the statistics lines included).
    """

    def __init__(
        self,
        config: RunConfig,
        tars: list[Path] | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        self.config = config
        self._given_tars = tars
        self._on_event = on_event
        self._events: deque[Event] = deque(maxlen=MAX_EVENTS)
        self._slots: list[_Slot] = []
        self._tars: dict[Path, _TarState] = {}
        self._pending: deque[Path] = deque()
        self._lease_ids = 0
        self._started_at = time.time()
        self._started_mono = time.monotonic()
        self._stopping = False
        self._forced = False
        self._interrupted = False
        self._finished = False
        self._exit_reason: str | None = None
        self._stop_timer: asyncio.TimerHandle | None = None
        self._memory = MemoryGuard(int(config.memory_limit_gb * 2**30))
        self._memory_total = 0
        """Workers' memory as the limit counts it (PSS where readable), last measured."""
        self._last_pss = float("-inf")
        self._next_stats = config.stats_every
        self._model_dir: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ run

    async def run(self) -> RunSummary:
        """Process every tar; returns the summary (also written to the output dir)."""
        self._loop = asyncio.get_running_loop()
        self._started_at = time.time()
        self._started_mono = time.monotonic()
        validated = await asyncio.to_thread(validate, self.config, self._given_tars)
        self._model_dir = validated.model_dir
        self._sweep_partials("an earlier run")
        for tar in validated.tars:
            state = _TarState()
            if tar_output_paths(self.config.output_dir, self.config.input_dir, tar).jsonl.exists():
                state.status = "skipped"
            else:
                self._pending.append(tar)
            self._tars[tar] = state
        skipped = sum(1 for s in self._tars.values() if s.status == "skipped")
        self._event(
            "info",
            None,
            f"{len(self._tars)} tars, {skipped} already done, {len(self._pending)} to process",
        )
        self._slots = [
            _Slot(
                placement=p,
                policy=RestartPolicy(
                    self.config.backoff_initial_s,
                    self.config.backoff_max_s,
                    self.config.crash_window_s,
                    self.config.crash_limit,
                ),
            )
            # No more workers than tars to do: each loads a model for nothing otherwise.
            for p in validated.placements[: max(1, len(self._pending))]
        ]
        self.config.logs_path.mkdir(parents=True, exist_ok=True)
        monitor = None
        if self._pending and not self._stopping:
            for slot in self._slots:
                slot.task = asyncio.create_task(self._slot_main(slot))
            monitor = asyncio.create_task(self._watch_memory())
            await self._wait_slots()
        else:
            for slot in self._slots:
                slot.state = WorkerState.DONE
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        if self._stop_timer is not None:
            self._stop_timer.cancel()
        self._sweep_partials("workers killed in this run")
        summary = self._summary()
        self._finished = True
        self._exit_reason = summary.exit_reason
        self._event(
            "info" if summary.exit_code == 0 else "error",
            None,
            f"run finished: {summary.exit_reason}",
        )
        try:
            write_summary(summary, summary_path(self.config.output_dir))
        except OSError as exc:
            # The outputs are committed either way; a missing summary must not hide the result.
            self._event("error", None, f"could not write the run summary: {exc}")
        return summary

    def _sweep_partials(self, whose: str) -> None:
        try:
            removed = remove_stale_partials(self.config.output_dir)
        except OSError as exc:
            self._event("warning", None, f"could not clean stale partial files: {exc}")
            return
        if removed:
            self._event("info", None, f"removed {len(removed)} partial files left by {whose}")

    async def _wait_slots(self) -> None:
        # A restart of a finished (DONE/FATAL) slot adds a new task, so loop until none run.
        while True:
            tasks = [s.task for s in self._slots if s.task is not None and not s.task.done()]
            if not tasks:
                return
            await asyncio.wait(tasks)

    # ------------------------------------------------------------------ one slot

    async def _slot_main(self, slot: _Slot) -> None:
        while True:
            if self._stopping or slot.user_stop or not self._work_remaining():
                slot.state = WorkerState.DONE
                return
            rc = await self._run_worker(slot)
            lease, slot.lease = slot.lease, None
            user_caused = slot.kill_requested or slot.restart_requested
            crashed = rc != 0 and not user_caused and not self._stopping
            if lease is not None:
                self._return_lease(lease, slot, counted=crashed)
            if self._stopping:
                slot.state = WorkerState.DONE
                return
            recycled = slot.recycle
            if recycled:
                # However the recycled worker ended, the guard may act again.
                slot.recycle = False
                self._memory.recycle_finished()
            if user_caused:
                slot.kill_requested = slot.restart_requested = False
                slot.restarts += 1
                continue
            if rc == 0:
                if recycled:
                    slot.restarts += 1
                continue
            reason = slot.load_failed or _describe_exit(rc, lease)
            slot.last_error = reason
            now = time.monotonic()
            if slot.load_failed is not None or (not slot.ready and rc > 0):
                self._fatal(slot, f"model load failed: {reason}")
                return
            slot.policy.record_failure(now)
            if slot.policy.crash_loop(now):
                self._fatal(
                    slot,
                    f"crash loop: {slot.policy.failures_in_window(now)} failures within "
                    f"{self.config.crash_window_s:g} s; last: {reason}",
                )
                return
            delay = slot.policy.next_delay()
            self._event(
                "warning",
                slot.placement.slot,
                f"worker died ({reason}); restarting in {delay:.1f} s",
            )
            slot.state = WorkerState.BACKOFF
            slot.backoff_until = time.time() + delay
            slot.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(slot.wake.wait(), delay)
            slot.backoff_until = None
            slot.restarts += 1

    def _fatal(self, slot: _Slot, reason: str) -> None:
        slot.state = WorkerState.FATAL
        slot.fatal_reason = reason
        slot.last_error = reason
        self._event("error", slot.placement.slot, f"slot is FATAL: {reason}")
        if all(s.state == WorkerState.FATAL for s in self._slots):
            self._exit_reason = f"every worker slot is fatal: {reason}"

    async def _run_worker(self, slot: _Slot) -> int:
        """Start one worker process and talk to it until it exits; returns its exit code."""
        p = slot.placement
        cfg = self.config
        options = WorkerOptions.for_slot(
            cfg,
            slot=p.slot,
            device=p.worker_device,
            threads=p.threads,
            model_dir=self._model_dir,
        )
        args = [sys.executable, "-m", "tartok_tui.worker", "--options", options.to_json()]
        env = {**os.environ, **cfg.extra_worker_env, **p.env}
        slot.hello = slot.ready = slot.exiting = False
        slot.load_failed = None
        slot.worker_state = None
        slot.state = WorkerState.STARTING
        log_path = cfg.logs_path / f"worker-{p.slot}.log"
        try:
            with open(log_path, "ab") as log_file:
                proc = await asyncio.create_subprocess_exec(
                    *args,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log_file,
                    env=env,
                    start_new_session=True,
                    limit=2**22,
                )
        except OSError as exc:
            slot.load_failed = f"could not start the worker: {exc}"
            return 1
        slot.proc, slot.pid = proc, proc.pid
        self._event("info", p.slot, f"worker started (pid {proc.pid}, {p.device})")
        if slot.paused:
            self._send(slot, m.Pause())
        if self._stopping:
            self._send(slot, m.Abort())
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError:
                # A line over the stream limit: not a message we sent, skip what we can.
                self._event("warning", p.slot, "oversized line from the worker ignored")
                continue
            if not line:
                break
            try:
                msg = m.decode(line)
            except m.ProtocolError as exc:
                self._event("warning", p.slot, f"bad line from the worker: {exc}")
                continue
            self._handle(slot, msg)
        rc = await proc.wait()
        slot.proc = None
        slot.mem_bytes = 0
        slot.gpu_mb = 0.0
        return rc

    # ------------------------------------------------------------------ messages

    def _handle(self, slot: _Slot, msg: m.Message) -> None:
        n = slot.placement.slot
        if isinstance(msg, m.Hello):
            slot.hello = True
            slot.state = WorkerState.LOADING
        elif isinstance(msg, m.Ready):
            slot.ready = True
            slot.state = WorkerState.IDLE
            self._event("info", n, f"model loaded in {msg.load_seconds:.1f} s")
            self._dispatch()
        elif isinstance(msg, m.LoadFailed):
            slot.load_failed = msg.reason
        elif isinstance(msg, m.TarStarted):
            if slot.lease is not None and slot.lease.lease_id == msg.lease_id:
                slot.lease.expected = msg.samples_expected
        elif isinstance(msg, m.Progress):
            if slot.lease is not None and slot.lease.lease_id == msg.lease_id:
                slot.lease.progress = msg
                if msg.samples_expected is not None:
                    slot.lease.expected = msg.samples_expected
                self._maybe_log_stats()
        elif isinstance(msg, m.SampleError):
            what = f"sample {msg.key}" if msg.key is not None else "tar"
            self._event(
                "warning", n, f"{Path(msg.tar_path).name}: {what}: {msg.stage}: {msg.reason}"
            )
        elif isinstance(msg, m.TarDone):
            self._tar_done(slot, msg)
        elif isinstance(msg, m.TarFailed):
            lease, slot.lease = slot.lease, None
            if lease is not None:
                state = self._tars[lease.tar]
                state.status, state.reason = "failed", msg.reason
            self._event("error", n, f"{Path(msg.tar_path).name} failed: {msg.reason}")
            self._after_lease()
        elif isinstance(msg, m.Resources):
            slot.gpu_mb = msg.gpu_reserved_mb
        elif isinstance(msg, m.StateChanged):
            slot.worker_state = msg.state
        elif isinstance(msg, m.Log):
            self._event(msg.level, n, msg.message)
        else:
            self._event("warning", n, f"unexpected message from the worker: {msg!r}")

    def _tar_done(self, slot: _Slot, msg: m.TarDone) -> None:
        lease, slot.lease = slot.lease, None
        batches = lease.progress.batches if lease is not None and lease.progress else 0
        slot.tars_done += 1
        slot.samples += msg.samples
        slot.errors += msg.errors
        slot.audio_s += msg.audio_seconds
        slot.model_s += msg.model_seconds
        slot.wall_s += msg.wall_seconds
        slot.batches += batches
        slot.policy.record_success()
        tar = lease.tar if lease is not None else Path(msg.tar_path)
        state = self._tars.setdefault(tar, _TarState())
        state.status = "done"
        state.samples, state.errors = msg.samples, msg.errors
        state.audio_s, state.wall_s = msg.audio_seconds, msg.wall_seconds
        self._event(
            "info",
            slot.placement.slot,
            f"{tar.name} done: {msg.samples} samples, {msg.errors} errors, "
            f"{msg.audio_seconds / max(msg.wall_seconds, 1e-9):.1f}x real time",
        )
        self._maybe_log_stats()
        self._after_lease()

    def _after_lease(self) -> None:
        if not self._work_remaining():
            # Slots waiting out a backoff have nothing left to restart for.
            for slot in self._slots:
                slot.wake.set()
        self._dispatch()

    # ------------------------------------------------------------------ leasing

    def _work_remaining(self) -> bool:
        return bool(self._pending) or any(s.lease is not None for s in self._slots)

    def _dispatch(self) -> None:
        """Give a tar to each idle worker; tell idle workers to exit once all work is done."""
        if self._stopping:
            return
        for slot in self._slots:
            if not (slot.alive and slot.ready and slot.lease is None and not slot.exiting):
                continue
            if slot.paused or slot.user_stop:
                continue
            if self._pending:
                tar = self._pending.popleft()
                self._lease_ids += 1
                state = self._tars[tar]
                isolate = state.kills >= self.config.poison_threshold
                if isolate and not state.isolated:
                    state.isolated = True
                    self._event(
                        "warning",
                        slot.placement.slot,
                        f"{tar.name} killed {state.kills} workers: processing it "
                        "sample by sample to find the culprit",
                    )
                state.status = "leased"
                slot.lease = _Lease(self._lease_ids, tar, isolate, time.monotonic())
                slot.state = WorkerState.RUNNING
                retry = isolate and state.retry_crashed
                state.retry_crashed = False
                self._send(slot, m.Lease(self._lease_ids, str(tar), isolate, retry))
            elif not self._work_remaining():
                slot.exiting = True
                self._send(slot, m.Stop())

    def _return_lease(self, lease: _Lease, slot: _Slot, counted: bool) -> None:
        state = self._tars[lease.tar]
        if state.status != "leased":
            return
        if tar_output_paths(
            self.config.output_dir, self.config.input_dir, lease.tar
        ).jsonl.exists():
            # Committed, then died before reporting it: done, nothing to redo.
            state.status = "done"
            self._event(
                "info",
                slot.placement.slot,
                f"{lease.tar.name} was committed before the worker died",
            )
            self._after_lease()
            return
        if lease.isolate and not counted:
            state.retry_crashed = True
        if counted:
            state.kills += 1
            limit = self.config.poison_threshold + MAX_TAR_KILLS_EXTRA
            if state.kills >= limit:
                state.status = "failed"
                state.reason = f"killed {state.kills} workers, even sample by sample"
                self._event(
                    "error", slot.placement.slot, f"{lease.tar.name} given up: {state.reason}"
                )
                self._after_lease()
                return
        state.status = "pending"
        # Front of the queue: a returned tar is older work than anything still waiting.
        self._pending.appendleft(lease.tar)
        self._dispatch()

    def _send(self, slot: _Slot, msg: m.Message) -> None:
        proc = slot.proc
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return
        if proc.stdin.is_closing():
            return
        try:
            proc.stdin.write(m.encode(msg))
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The worker is exiting; its exit is handled where its stdout ends.
            self._event("warning", slot.placement.slot, f"could not send {msg.TYPE}: {exc}")

    # ------------------------------------------------------------------ memory

    async def _watch_memory(self) -> None:
        while True:
            await asyncio.sleep(self.config.memory_check_s)
            await self.check_memory()

    async def check_memory(self) -> None:
        """Measure every worker tree; cleanup, then recycle the biggest, when over the limit."""
        alive = [s for s in self._slots if s.alive and s.pid is not None]
        pids = {s.placement.slot: s.pid for s in alive}
        usage = await asyncio.to_thread(
            lambda: {n: tree_memory(pid, pss=False) for n, pid in pids.items()}
        )
        rss_total = sum(mem.rss for mem in usage.values() if mem is not None)
        now = time.monotonic()
        if needs_pss(rss_total, self._memory.limit_bytes, now - self._last_pss):
            self._last_pss = now
            usage = await asyncio.to_thread(
                lambda: {n: tree_memory(pid) for n, pid in pids.items()}
            )
            self._memory_total = sum(mem.used for mem in usage.values() if mem is not None)
        used: dict[int, int] = {}
        for slot in alive:
            mem = usage.get(slot.placement.slot)
            slot.mem_bytes = (
                mem.rss if mem is not None else 0
            )  # the view shows RSS; the limit uses PSS
            if mem is not None:
                used[slot.placement.slot] = mem.used
        busy = {s.placement.slot for s in alive if s.lease is not None and not s.exiting}
        action = self._memory.check(used, busy)
        if action is None:
            return
        gib = self._memory_total / 2**30
        if action.kind == "cleanup":
            self._event(
                "warning",
                None,
                f"workers use {gib:.1f} GiB > limit "
                f"{self.config.memory_limit_gb:g} GiB: asking all to free memory",
            )
            for slot in alive:
                self._send(slot, m.Cleanup())
        elif action.kind == "recycle" and action.slot is not None:
            slot = self._slots[action.slot]
            self._event(
                "warning",
                action.slot,
                f"still {gib:.1f} GiB after cleanup: recycling this worker after its current tar",
            )
            slot.recycle = True
            slot.exiting = True
            self._send(slot, m.Stop())

    # ------------------------------------------------------------------ stats

    def _maybe_log_stats(self) -> None:
        total = sum(self._slot_samples(s)[0] for s in self._slots)
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

    @staticmethod
    def _slot_samples(slot: _Slot) -> tuple[int, int, float, float, int]:
        """samples, errors, audio s, model s, batches, committed plus the current lease."""
        p = slot.lease.progress if slot.lease is not None else None
        if p is None:
            return slot.samples, slot.errors, slot.audio_s, slot.model_s, slot.batches
        return (
            slot.samples + p.samples_done,
            slot.errors + p.errors,
            slot.audio_s + p.audio_seconds,
            slot.model_s + p.model_seconds,
            slot.batches + p.batches,
        )

    # ------------------------------------------------------------------ views

    def _view_state(self, slot: _Slot) -> WorkerState:
        if not slot.alive:
            return slot.state
        if not slot.hello:
            return WorkerState.STARTING
        if not slot.ready:
            return WorkerState.LOADING
        if slot.exiting:
            return WorkerState.STOPPING
        if slot.paused:
            return WorkerState.PAUSED
        return WorkerState.RUNNING if slot.lease is not None else WorkerState.IDLE

    def snapshot(self) -> RunView:
        now_mono = time.monotonic()
        workers = []
        for slot in self._slots:
            samples, errors, audio, model, batches = self._slot_samples(slot)
            wall = slot.wall_s + (now_mono - slot.lease.started_at if slot.lease else 0.0)
            lease = slot.lease
            workers.append(
                WorkerView(
                    slot=slot.placement.slot,
                    device=slot.placement.device,
                    pid=slot.pid if slot.alive else None,
                    state=self._view_state(slot),
                    tar=(
                        str(relative_tar_path(self.config.input_dir, lease.tar))
                        if lease is not None
                        else None
                    ),
                    tar_samples_done=lease.progress.samples_done if lease and lease.progress else 0,
                    tar_samples_expected=lease.expected if lease is not None else None,
                    tars_done=slot.tars_done,
                    samples_done=samples,
                    errors=errors,
                    audio_seconds=audio,
                    model_seconds=model,
                    avg_latency_ms=wall * 1000.0 / samples if samples else 0.0,
                    avg_batch_ms=model * 1000.0 / batches if batches else 0.0,
                    realtime_factor=audio / model if model > 0 else 0.0,
                    rss_bytes=slot.mem_bytes,
                    gpu_mem_mb=slot.gpu_mb,
                    restarts=slot.restarts,
                    last_error=slot.last_error,
                    backoff_until=slot.backoff_until,
                )
            )
        statuses = Counter(s.status for s in self._tars.values())
        return RunView(
            started_at=self._started_at,
            now=time.time(),
            tars_total=len(self._tars),
            tars_done=statuses["done"],
            tars_skipped=statuses["skipped"],
            tars_failed=statuses["failed"],
            samples_done=sum(w.samples_done for w in workers),
            samples_expected=None,
            errors=sum(w.errors for w in workers),
            audio_seconds=sum(w.audio_seconds for w in workers),
            memory_bytes=self._memory_total,
            memory_limit_bytes=self._memory.limit_bytes,
            workers=tuple(workers),
            events=tuple(self._events),
            finished=self._finished,
            stopping=self._stopping,
            exit_reason=self._exit_reason,
        )

    def _event(self, level: str, slot: int | None, message: str) -> None:
        event = Event(time=time.time(), level=level, slot=slot, message=message)
        self._events.append(event)
        if self._on_event is not None:
            self._on_event(event)

    # ------------------------------------------------------------------ controls

    def _slot(self, n: int) -> _Slot:
        if not 0 <= n < len(self._slots):
            raise IndexError(f"no worker slot {n}")
        return self._slots[n]

    def pause(self, slot: int) -> None:
        """The worker takes no new batch (and no new tar) until resumed."""
        s = self._slot(slot)
        s.paused = True
        self._send(s, m.Pause())
        self._event("info", slot, "paused")

    def resume(self, slot: int) -> None:
        s = self._slot(slot)
        s.paused = False
        self._send(s, m.Resume())
        self._event("info", slot, "resumed")
        self._dispatch()

    def pause_all(self) -> None:
        for n in range(len(self._slots)):
            self.pause(n)

    def resume_all(self) -> None:
        for n in range(len(self._slots)):
            self.resume(n)

    def stop(self, slot: int) -> None:
        """Finish the current tar, then exit; the slot is not restarted."""
        s = self._slot(slot)
        s.user_stop = True
        s.exiting = True
        self._send(s, m.Stop())
        s.wake.set()
        self._event("info", slot, "stopping after the current tar")

    def kill(self, slot: int) -> None:
        """SIGKILL the worker's process group now; its tar goes back to the queue and the
        slot restarts at once (a user kill does not count toward the crash loop)."""
        s = self._slot(slot)
        if s.alive and s.pid is not None:
            s.kill_requested = True
            _killpg(s.pid)
            self._event("warning", slot, f"killed (pid {s.pid})")

    def restart(self, slot: int) -> None:
        """Abort the current tar (it goes back to the queue), exit, start a fresh worker.

        A slot in backoff restarts now; a FATAL or stopped slot is revived."""
        s = self._slot(slot)
        s.user_stop = False
        if s.alive:
            s.restart_requested = True
            s.exiting = True
            self._send(s, m.Abort())
        elif s.state == WorkerState.BACKOFF:
            s.wake.set()
        elif s.task is not None and s.task.done() and not self._stopping and not self._finished:
            s.policy = RestartPolicy(
                self.config.backoff_initial_s,
                self.config.backoff_max_s,
                self.config.crash_window_s,
                self.config.crash_limit,
            )
            s.fatal_reason = None
            s.state = WorkerState.STARTING
            s.task = asyncio.get_running_loop().create_task(self._slot_main(s))
        self._event("info", slot, "restarting")

    def request_stop(self, force: bool = False) -> None:
        """Stop leasing, abort the tars in progress (they stay unfinished, resumable)
        and let workers exit; killed after stop_timeout_s. A second request kills now."""
        if self._stopping or force:
            self._stopping = True
            self._interrupted = True
            self._force_kill("forced stop: killing every worker")
            return
        self._stopping = True
        self._interrupted = True
        self._event("warning", None, "stopping: aborting tars in progress")
        for slot in self._slots:
            slot.exiting = True
            self._send(slot, m.Abort())
            slot.wake.set()
        if self._loop is not None:
            self._stop_timer = self._loop.call_later(
                self.config.stop_timeout_s,
                self._force_kill,
                f"workers still alive after {self.config.stop_timeout_s:g} s: killing them",
            )

    def _force_kill(self, why: str) -> None:
        self._forced = True
        alive = [s for s in self._slots if s.alive and s.pid is not None]
        if alive:
            self._event("error", None, why)
        for slot in alive:
            _killpg(slot.pid)
        for slot in self._slots:
            slot.wake.set()

    # ------------------------------------------------------------------ summary

    def _summary(self) -> RunSummary:
        statuses = Counter(s.status for s in self._tars.values())
        unfinished = statuses["pending"] + statuses["leased"]
        if self._interrupted:
            code, reason = ExitCode.INTERRUPTED, "interrupted by a stop request"
        elif self._slots and all(s.state == WorkerState.FATAL for s in self._slots) and unfinished:
            code = ExitCode.ALL_FATAL
            reason = self._exit_reason or "every worker slot is fatal"
        elif statuses["failed"] or unfinished:
            code = ExitCode.INCOMPLETE
            reason = f"{statuses['failed']} tars failed, {unfinished} unfinished"
        else:
            code, reason = ExitCode.OK, "all tars done"
        tars = []
        for tar, st in self._tars.items():
            status = "unfinished" if st.status in ("pending", "leased") else st.status
            tars.append(
                TarResult(
                    tar=str(relative_tar_path(self.config.input_dir, tar)),
                    status=status,
                    samples=st.samples,
                    errors=st.errors,
                    audio_seconds=st.audio_s,
                    wall_seconds=st.wall_s,
                    worker_kills=st.kills,
                    isolated=st.isolated,
                    reason=st.reason,
                )
            )
        view = self.snapshot()
        return RunSummary(
            exit_code=int(code),
            exit_reason=reason,
            started_at=self._started_at,
            finished_at=time.time(),
            tars_total=len(self._tars),
            tars_done=statuses["done"],
            tars_skipped=statuses["skipped"],
            tars_failed=statuses["failed"],
            tars_unfinished=unfinished,
            samples=view.samples_done,
            errors=view.errors,
            audio_seconds=view.audio_seconds,
            model_seconds=sum(w.model_seconds for w in view.workers),
            worker_restarts=sum(w.restarts for w in view.workers),
            workers=[
                {
                    "slot": w.slot,
                    "device": w.device,
                    "state": str(w.state),
                    "tars_done": w.tars_done,
                    "samples": w.samples_done,
                    "errors": w.errors,
                    "audio_seconds": w.audio_seconds,
                    "model_seconds": w.model_seconds,
                    "avg_latency_ms": w.avg_latency_ms,
                    "avg_batch_ms": w.avg_batch_ms,
                    "realtime_factor": w.realtime_factor,
                    "restarts": w.restarts,
                    "last_error": w.last_error,
                }
                for w in view.workers
            ],
            tars=tars,
        )


def _killpg(pid: int) -> None:
    # Workers lead their own session (start_new_session), so pgid == pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _describe_exit(rc: int, lease: _Lease | None) -> str:
    if rc < 0:
        try:
            what = f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            what = f"killed by signal {-rc}"
    else:
        what = f"exit code {rc}"
    return what + (f" while on {lease.tar.name}" if lease is not None else "")


def install_signal_handlers(supervisor: Supervisor) -> Callable[[], None]:
    """SIGINT/SIGTERM: first a graceful stop, then a forced one. For the headless path.

    Call from inside the running loop; returns a function that removes the handlers.
    """
    loop = asyncio.get_running_loop()
    count = 0

    def on_signal() -> None:
        nonlocal count
        count += 1
        supervisor.request_stop(force=count > 1)

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            # Not the main thread or not a Unix loop: the caller keeps default handling.
            continue

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return remove

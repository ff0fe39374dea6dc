"""A scripted stand-in for the supervisor: recorded controls over simulated time.

Used by the view tests and the screenshot script. Time only moves when the run advances,
so what it shows is the same on every machine. It behaves as the real supervisor does where
the views can tell: "pausing" until the worker acknowledges, a worker without progress past
the stall timeout killed and restarted, its tar leased again first, the same event texts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace

from fake_views import (
    GIB,
    LOAD_S,
    SAMPLES_PER_TAR,
    SECONDS_PER_SAMPLE,
    STALL_TIMEOUT_S,
    mid_run_view,
    run_totals,
    tar_name,
)

from tartok_tui.exit_codes import ExitCode
from tartok_tui.formatting import ALIVE_STATES
from tartok_tui.supervisor.views import Event, RunView, WorkerState, WorkerView

EXIT_REASONS = {
    ExitCode.OK: "all tars done",
    ExitCode.INTERRUPTED: "interrupted by a stop request",
}
"""The real supervisor's exit reasons; other codes get its "N failed, M unfinished"."""


@dataclass(frozen=True)
class FakeResult:
    exit_code: int


class FakeSupervisor:
    """Implements ``SupervisorControl``; records every control call in ``calls``.

    ``run()`` advances simulated time by ``sim_step_s`` every ``step_s`` real seconds
    until every tar is done, ``max_steps`` is reached (the run then ends with
    ``exit_code``), or a stop is requested (a graceful stop takes ``stop_steps`` more
    steps, a forced one none; the run then ends with ``stopped_code``). ``fail_with``:
    raise this from ``run()`` instead, as a supervisor bug would.
    """

    def __init__(
        self,
        view: RunView | None = None,
        *,
        on_event: Callable[[Event], None] | None = None,
        step_s: float = 0.05,
        sim_step_s: float = 1.0,
        max_steps: int | None = None,
        exit_code: int = ExitCode.OK,
        stopped_code: int = ExitCode.INTERRUPTED,
        stop_steps: int = 0,
        fail_with: BaseException | None = None,
    ) -> None:
        self.view = view if view is not None else mid_run_view()
        self.on_event = on_event
        self.step_s = step_s
        self.sim_step_s = sim_step_s
        self.max_steps = max_steps
        self.exit_code = exit_code
        self.stopped_code = stopped_code
        self.stop_steps = stop_steps
        self.fail_with = fail_with
        self.force = False
        self.calls: list[tuple] = []
        self._next_tar = 400 - 1  # fresh names for tars leased during the run
        self._requeued: list[str] = []  # tars given back, leased again first
        self._next_pid = 42_000
        self._throughput_carry = 0.0
        self._stop_requested = False
        # asyncio.Event binds to the loop it is first awaited in, so run() makes it.
        self._stop: asyncio.Event | None = None

    # ------------------------------------------------------------------ reading

    def snapshot(self) -> RunView:
        return self.view

    # ------------------------------------------------------------------ running

    async def run(self) -> FakeResult:
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        if self.fail_with is not None:
            await asyncio.sleep(self.step_s)
            raise self.fail_with
        steps = 0
        stop_countdown: int | None = None
        while not self.view.finished:
            # Timing out is the normal tick; the event only cuts a tick short.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.step_s)
            steps += 1
            if self._stop.is_set():
                self._stop.clear()
                if stop_countdown is None:
                    stop_countdown = self.stop_steps
            if stop_countdown is not None:
                if self.force or stop_countdown <= 0:
                    self.finish(self.stopped_code)
                    break
                stop_countdown -= 1
            if self.max_steps is not None and steps >= self.max_steps:
                self.finish(self.exit_code)
                break
            self.advance(self.sim_step_s)
        return FakeResult(self.exit_code)

    def advance(self, seconds: float) -> None:
        """Move simulated time on: acknowledgements arrive, running workers process samples
        at their average rate, a worker without progress past the stall timeout is killed,
        restarted workers load and take a tar."""
        now = self.view.now + seconds
        audio_before = self.view.audio_seconds
        self.view = replace(self.view, now=now)
        for w in self.view.workers:
            self._put(self._step(w, now, seconds))
        self._totals()
        self._record_throughput(seconds, self.view.audio_seconds - audio_before)
        complete = self.view.tars_done + self.view.tars_skipped + self.view.tars_failed
        if complete >= self.view.tars_total and not self._stop_requested:
            self.finish(self.exit_code)

    def _step(self, w: WorkerView, now: float, seconds: float) -> WorkerView:
        if w.state == WorkerState.PAUSING:
            self._emit(w.slot, "info", "paused (no batch running)")
            return replace(w, state=WorkerState.PAUSED, progress_age_s=None)
        if seconds <= 0:
            return w
        if w.state in (WorkerState.BACKOFF, WorkerState.STALLED):
            if w.backoff_until is not None and now >= w.backoff_until:
                return self._start(w)
            return w
        if w.state == WorkerState.STARTING:
            return replace(w, state=WorkerState.LOADING, progress_age_s=seconds)
        if w.state == WorkerState.LOADING:
            loading = (w.progress_age_s or 0.0) + seconds
            if loading < LOAD_S:
                return replace(w, progress_age_s=loading)
            self._emit(w.slot, "info", f"model loaded in {LOAD_S:.1f} s")
            return self._lease(replace(w, state=WorkerState.RUNNING, progress_age_s=0.4))
        if w.state in (WorkerState.RUNNING, WorkerState.STOPPING):
            return self._work(w, seconds)
        return w

    def _work(self, w: WorkerView, seconds: float) -> WorkerView:
        age = w.progress_age_s or 0.0
        if age >= 30.0:  # stuck in a batch (a hung device call): no progress, then a stall
            age += seconds
            if age < STALL_TIMEOUT_S:
                return replace(w, progress_age_s=age)
            return self._stalled(w, age)
        step = int(seconds * 1000.0 / w.avg_latency_ms) if w.avg_latency_ms > 0 else 0
        done = w.tar_samples_done + step
        expected = w.tar_samples_expected or SAMPLES_PER_TAR
        errors = (w.samples_done + step) // 4000
        w = replace(
            w,
            tar_samples_done=done,
            samples_done=w.samples_done + step,
            errors=errors,
            audio_seconds=w.audio_seconds + step * SECONDS_PER_SAMPLE,
            model_seconds=w.model_seconds + step * w.avg_latency_ms * 0.9 / 1000.0,
        )
        if done < expected:
            return w
        self._emit(
            w.slot,
            "info",
            f"{w.tar} done: {expected} samples, {expected // 4000} errors, "
            f"{w.realtime_factor * 0.9:.1f}x real time",
        )
        w = replace(w, tars_done=w.tars_done + 1, tar_samples_done=done - expected)
        if w.state == WorkerState.STOPPING:
            return self._gone(w, WorkerState.DONE)
        return self._lease(w, carry=done - expected)

    def _stalled(self, w: WorkerView, age: float) -> WorkerView:
        reason = f"stalled: no progress for {age:.0f} s on {w.tar}"
        self._emit(w.slot, "error", reason)
        self._emit(w.slot, "warning", f"worker stalled ({reason}); restarting in 1.0 s")
        if w.tar is not None:
            self._requeued.append(w.tar)
        w = self._gone(w, WorkerState.STALLED)
        return replace(
            w, last_error=reason, restarts=w.restarts + 1, backoff_until=self.view.now + 1.0
        )

    def _gone(self, w: WorkerView, state: WorkerState) -> WorkerView:
        """The process has ended: samples of an unfinished tar are not counted."""
        lost = w.tar_samples_done
        return replace(
            w,
            state=state,
            pid=None,
            tar=None,
            tar_samples_done=0,
            tar_samples_expected=None,
            samples_done=w.samples_done - lost,
            audio_seconds=w.audio_seconds - lost * SECONDS_PER_SAMPLE,
            rss_bytes=0,
            gpu_mem_mb=0.0,
            progress_age_s=None,
        )

    def _start(self, w: WorkerView) -> WorkerView:
        self._next_pid += 1
        self._emit(w.slot, "info", f"worker started (pid {self._next_pid}, {w.device})")
        return replace(
            w,
            state=WorkerState.STARTING,
            pid=self._next_pid,
            backoff_until=None,
            progress_age_s=0.0,
            rss_bytes=int(1.1 * GIB),
        )

    def _lease(self, w: WorkerView, carry: int = 0) -> WorkerView:
        """The next tar in line, as the supervisor would lease it (given-back tars first)."""
        if self._requeued:
            name = self._requeued.pop(0)
        else:
            self._next_tar += 1
            name = tar_name(self._next_tar)
        return replace(
            w,
            tar=name,
            tar_samples_done=carry,
            tar_samples_expected=SAMPLES_PER_TAR,
            rss_bytes=w.rss_bytes or int(5.2 * GIB),
            gpu_mem_mb=w.gpu_mem_mb or (14_200.0 if w.device.startswith("cuda") else 0.0),
        )

    def _totals(self) -> None:
        """The run's sums over its workers, and the sample total counted as the queue does."""
        view = self.view
        self.view = replace(view, **run_totals(view.workers, view.tars_total, view.tars_skipped))

    def _record_throughput(self, seconds: float, audio: float) -> None:
        """One x-real-time value per 10 s of simulated time, as the supervisor keeps them."""
        if seconds <= 0:
            return
        self._throughput_carry += seconds
        values = list(self.view.throughput)
        while self._throughput_carry >= 10.0:
            self._throughput_carry -= 10.0
            values.append(round(audio / seconds, 1))
        self.view = replace(self.view, throughput=tuple(values[-60:]))

    def finish(self, code: int) -> None:
        """End the run now with ``code``, as if every worker had exited."""
        self.exit_code = code
        unfinished = (
            self.view.tars_total
            - self.view.tars_done
            - self.view.tars_skipped
            - self.view.tars_failed
        )
        reason = EXIT_REASONS.get(
            code, f"{self.view.tars_failed} tars failed, {max(0, unfinished)} unfinished"
        )
        for w in self.view.workers:
            if w.state != WorkerState.FATAL:
                self._put(self._gone(w, WorkerState.DONE))
        self._totals()
        self.view = replace(
            self.view, finished=True, stopping=self.view.stopping, exit_reason=reason
        )
        self._emit(None, "info" if code == ExitCode.OK else "error", f"run finished: {reason}")

    def _emit(self, slot: int | None, level: str, message: str) -> None:
        event = Event(self.view.now, level, slot, message)
        self.view = replace(self.view, events=(*self.view.events, event)[-200:])
        if self.on_event is not None:
            self.on_event(event)

    # ------------------------------------------------------------------ controls

    def _put(self, new: WorkerView) -> None:
        self.view = replace(
            self.view,
            workers=tuple(new if w.slot == new.slot else w for w in self.view.workers),
        )

    def _worker(self, slot: int) -> WorkerView:
        return next(w for w in self.view.workers if w.slot == slot)

    def pause(self, slot: int) -> None:
        self.calls.append(("pause", slot))
        w = self._worker(slot)
        if w.state in (WorkerState.IDLE, WorkerState.RUNNING):
            self._put(replace(w, state=WorkerState.PAUSING))
        self._emit(slot, "info", "pausing")

    def resume(self, slot: int) -> None:
        self.calls.append(("resume", slot))
        w = self._worker(slot)
        if w.state in (WorkerState.PAUSING, WorkerState.PAUSED):
            state = WorkerState.RUNNING if w.tar is not None else WorkerState.IDLE
            self._put(replace(w, state=state, progress_age_s=0.0 if w.tar else None))
        self._emit(slot, "info", "resumed")

    def stop(self, slot: int) -> None:
        self.calls.append(("stop", slot))
        w = self._worker(slot)
        if w.state in ALIVE_STATES:
            self._put(replace(w, state=WorkerState.STOPPING))
        self._emit(slot, "info", "stopping after the current tar")

    def kill(self, slot: int) -> None:
        self.calls.append(("kill", slot))
        w = self._worker(slot)
        if w.pid is None:
            return
        self._emit(slot, "warning", f"killed (pid {w.pid})")
        if w.tar is not None:
            self._requeued.append(w.tar)
        gone = self._gone(w, WorkerState.STARTING)
        self._put(self._start(replace(gone, restarts=w.restarts + 1)))
        self._totals()

    def restart(self, slot: int) -> None:
        self.calls.append(("restart", slot))
        w = self._worker(slot)
        if w.pid is not None:
            if w.tar is not None:
                self._requeued.append(w.tar)
            gone = self._gone(w, WorkerState.STARTING)
            self._put(self._start(replace(gone, restarts=w.restarts + 1)))
            self._totals()
        elif w.state in (WorkerState.BACKOFF, WorkerState.STALLED):
            self._put(replace(w, backoff_until=self.view.now))
        self._emit(slot, "info", "restarting")

    def pause_all(self) -> None:
        self.calls.append(("pause_all",))
        for w in self.view.workers:
            if w.state in (WorkerState.IDLE, WorkerState.RUNNING):
                self._put(replace(w, state=WorkerState.PAUSING))
            self._emit(w.slot, "info", "pausing")

    def resume_all(self) -> None:
        self.calls.append(("resume_all",))
        for w in self.view.workers:
            if w.state in (WorkerState.PAUSING, WorkerState.PAUSED):
                self._put(replace(w, state=WorkerState.RUNNING, progress_age_s=0.0))
            self._emit(w.slot, "info", "resumed")

    def request_stop(self, force: bool = False) -> None:
        self.calls.append(("request_stop", force))
        again = self._stop_requested
        self.view = replace(self.view, stopping=True)
        self._stop_requested = True
        self.force = self.force or force or again
        if force or again:
            if any(w.pid is not None for w in self.view.workers):
                self._emit(None, "error", "forced stop: killing every worker")
        else:
            self._emit(None, "warning", "stopping: aborting tars in progress")
        if self._stop is not None:
            self._stop.set()


class RecordingControls:
    """What a policy (the memory watch) asked of the run, in order: ("cleanup_all",),
    ("recycle", slot), ("report", level, slot, message)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def cleanup_all(self) -> None:
        self.calls.append(("cleanup_all",))

    def recycle(self, slot: int) -> None:
        self.calls.append(("recycle", slot))

    def report(self, level: str, slot: int | None, message: str) -> None:
        self.calls.append(("report", level, slot, message))

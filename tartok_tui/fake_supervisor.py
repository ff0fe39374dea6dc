"""A scripted stand-in for the supervisor: realistic snapshots, recorded controls.

Used by the view tests, the screenshot script and anyone who wants to look at
the dashboard without GPUs. It simulates time (``now`` only moves when the run
advances), so what it shows is the same on every machine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace

from tartok_tui.exit_codes import ExitCode
from tartok_tui.formatting import ALIVE_STATES, GIB
from tartok_tui.supervisor.views import Event, RunView, WorkerState, WorkerView

START = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC: a fixed origin for simulated time
SAMPLES_PER_TAR = 25_000
SECONDS_PER_SAMPLE = 10.0


@dataclass(frozen=True)
class FakeResult:
    exit_code: int


def worker(
    slot: int,
    device: str,
    state: WorkerState = WorkerState.RUNNING,
    *,
    tar_index: int | None = None,
    tar_done: int = 0,
    tars_done: int = 0,
    restarts: int = 0,
    last_error: str | None = None,
    rate: float = 40.0,
) -> WorkerView:
    """A worker view with this slot's history, working at ``rate`` samples/s."""
    samples = tars_done * SAMPLES_PER_TAR + tar_done
    busy = state in (WorkerState.RUNNING, WorkerState.PAUSED, WorkerState.STOPPING)
    return WorkerView(
        slot=slot,
        device=device,
        pid=None
        if state in (WorkerState.BACKOFF, WorkerState.FATAL, WorkerState.DONE)
        else 41000 + slot * 17,
        state=state,
        tar=f"EN-B{tar_index if tar_index is not None else slot:06d}.tar" if busy else None,
        tar_samples_done=tar_done if busy else 0,
        tar_samples_expected=SAMPLES_PER_TAR if busy else None,
        tars_done=tars_done,
        samples_done=samples,
        errors=samples // 4000,
        audio_seconds=samples * SECONDS_PER_SAMPLE,
        model_seconds=samples / rate * 0.9 if samples else 0.0,
        avg_latency_ms=1000.0 / rate if samples else 0.0,
        avg_batch_ms=1000.0 / rate * 24 if samples else 0.0,
        realtime_factor=rate * SECONDS_PER_SAMPLE / 0.9 if samples else 0.0,
        rss_bytes=int((5.2 + 0.1 * slot) * GIB)
        if state in ALIVE_STATES and state != WorkerState.BACKOFF
        else 0,
        gpu_mem_mb=(14_200.0 + 37 * slot) if device.startswith("cuda") and busy else 0.0,
        restarts=restarts,
        last_error=last_error,
    )


def mid_run_view(now: float = START + 3723.0) -> RunView:
    """Eight GPU workers on four GPUs plus one CPU worker, an hour into a 400-tar run:
    most running, one paused, one waiting to restart after an out-of-memory kill,
    one restarted earlier, one still loading."""
    workers = (
        worker(0, "cuda:0", tar_index=40, tar_done=18_312, tars_done=5),
        worker(
            1,
            "cuda:0",
            tar_index=41,
            tar_done=9_870,
            tars_done=5,
            restarts=1,
            last_error="killed by SIGKILL while on EN-B000017.tar",
        ),
        worker(2, "cuda:1", tar_index=42, tar_done=22_001, tars_done=5),
        worker(3, "cuda:1", WorkerState.PAUSED, tar_index=43, tar_done=3_150, tars_done=4),
        worker(4, "cuda:2", tar_index=44, tar_done=12_544, tars_done=5),
        worker(
            5,
            "cuda:2",
            WorkerState.BACKOFF,
            tars_done=4,
            restarts=2,
            last_error="exit code 1 while on EN-B000045.tar",
        ),
        worker(6, "cuda:3", tar_index=46, tar_done=640, tars_done=6),
        worker(7, "cuda:3", WorkerState.LOADING, tars_done=0, restarts=0, rate=40.0),
        worker(8, "cpu", tar_index=48, tar_done=1_210, tars_done=0, rate=3.1),
    )
    # Worded as the real supervisor words them.
    events = (
        Event(START + 1.2, "info", None, "400 tars, 12 already done, 388 to process"),
        Event(START + 1.9, "info", 0, "worker started (pid 41000, cuda:0)"),
        Event(START + 31.0, "info", 0, "model loaded in 29.1 s"),
        Event(
            START + 1204.5,
            "warning",
            1,
            "worker died (killed by SIGKILL while on EN-B000017.tar); restarting in 1.0 s",
        ),
        Event(
            START + 2400.0,
            "info",
            None,
            "total requests: 500000, total time: 2400.00 s, average time: 0.0048 s/request",
        ),
        Event(
            START + 3100.2,
            "warning",
            None,
            "workers use 101.3 GiB > limit 100 GiB: asking all to free memory",
        ),
        Event(
            START + 3131.0,
            "warning",
            6,
            "still 100.4 GiB after cleanup: recycling this worker after its current tar",
        ),
        Event(
            START + 3600.4,
            "info",
            2,
            "EN-B000037.tar done: 25000 samples, 6 errors, 1847.2x real time",
        ),
        Event(
            START + 3612.0,
            "warning",
            4,
            "EN-B000044.tar: sample EN_B00044_S00012_W000121: decode: Format not recognised",
        ),
        Event(
            START + 3650.7,
            "warning",
            5,
            "worker died (exit code 1 while on EN-B000045.tar); restarting in 2.0 s",
        ),
        Event(START + 3690.3, "info", 3, "paused"),
        Event(START + 3715.0, "info", 7, "worker started (pid 41119, cuda:3)"),
    )
    samples = sum(w.samples_done for w in workers)
    return RunView(
        started_at=START,
        now=now,
        tars_total=400,
        tars_done=sum(w.tars_done for w in workers),
        tars_skipped=12,
        tars_failed=1,
        samples_done=samples,
        samples_expected=400 * SAMPLES_PER_TAR,
        errors=sum(w.errors for w in workers),
        audio_seconds=samples * SECONDS_PER_SAMPLE,
        memory_bytes=sum(w.rss_bytes for w in workers),
        memory_limit_bytes=100 * GIB,
        workers=workers,
        events=events,
        finished=False,
        stopping=False,
    )


class FakeSupervisor:
    """Implements ``SupervisorControl``; records every control call in ``calls``.

    ``run()`` advances simulated time by ``sim_step_s`` every ``step_s`` real
    seconds, moving running workers through their tars, until every tar is done,
    ``max_steps`` is reached, or a stop is requested (a graceful stop takes
    ``stop_steps`` more steps, a forced one none). ``fail_with``: raise this
    from ``run()`` instead, as a supervisor bug would.
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
        stop_steps: int = 0,
        fail_with: BaseException | None = None,
    ) -> None:
        self.view = view if view is not None else mid_run_view()
        self.on_event = on_event
        self.step_s = step_s
        self.sim_step_s = sim_step_s
        self.max_steps = max_steps
        self.exit_code = exit_code
        self.stop_steps = stop_steps
        self.fail_with = fail_with
        self.force = False
        self.calls: list[tuple] = []
        self._next_tar = 400 - 1  # fresh names for tars leased during the run
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
                    self._finish(ExitCode.INTERRUPTED, "interrupted")
                    break
                stop_countdown -= 1
            if self.max_steps is not None and steps >= self.max_steps:
                self._finish(self.exit_code, None)
                break
            self.advance(self.sim_step_s)
        return FakeResult(self.exit_code)

    def advance(self, seconds: float) -> None:
        """Move simulated time on; running workers process samples at their average rate."""
        now = self.view.now + seconds
        workers = []
        tars_done = self.view.tars_done
        for w in self.view.workers:
            if w.state == WorkerState.RUNNING and w.avg_latency_ms > 0:
                step = int(seconds * 1000.0 / w.avg_latency_ms)
                done = w.tar_samples_done + step
                expected = w.tar_samples_expected or SAMPLES_PER_TAR
                finished_tar = done >= expected
                if finished_tar:
                    tars_done += 1
                    self._emit(Event(now, "info", w.slot, f"{w.tar} done: {expected:,} samples"))
                if finished_tar:
                    # The next tar in line, as the supervisor would lease it.
                    self._next_tar += 1
                w = replace(
                    w,
                    tar=f"EN-B{self._next_tar:06d}.tar" if finished_tar else w.tar,
                    tar_samples_done=done - expected if finished_tar else done,
                    tars_done=w.tars_done + (1 if finished_tar else 0),
                    samples_done=w.samples_done + step,
                    audio_seconds=w.audio_seconds + step * SECONDS_PER_SAMPLE,
                )
            workers.append(w)
        samples = sum(w.samples_done for w in workers)
        complete = tars_done + self.view.tars_skipped + self.view.tars_failed
        self.view = replace(
            self.view,
            now=now,
            workers=tuple(workers),
            tars_done=tars_done,
            samples_done=samples,
            audio_seconds=samples * SECONDS_PER_SAMPLE,
        )
        if complete >= self.view.tars_total:
            self._finish(self.exit_code, None)

    def finish(self, code: int, reason: str | None = None) -> None:
        """End the run now, as if every worker had exited."""
        self._finish(code, reason)

    def _finish(self, code: int, reason: str | None) -> None:
        self.exit_code = code
        workers = tuple(
            replace(w, state=WorkerState.DONE, pid=None, tar=None)
            if w.state != WorkerState.FATAL
            else w
            for w in self.view.workers
        )
        self.view = replace(
            self.view, workers=workers, finished=True, stopping=False, exit_reason=reason
        )
        self._emit(Event(self.view.now, "info", None, f"run finished (exit code {code})"))

    def _emit(self, event: Event) -> None:
        events = (*self.view.events, event)[-200:]
        self.view = replace(self.view, events=events)
        if self.on_event is not None:
            self.on_event(event)

    # ------------------------------------------------------------------ controls

    def _set_state(self, slot: int, state: WorkerState, **changes) -> None:
        self.view = replace(
            self.view,
            workers=tuple(
                replace(w, state=state, **changes) if w.slot == slot else w
                for w in self.view.workers
            ),
        )

    def _worker(self, slot: int) -> WorkerView:
        return next(w for w in self.view.workers if w.slot == slot)

    def pause(self, slot: int) -> None:
        self.calls.append(("pause", slot))
        self._set_state(slot, WorkerState.PAUSED)
        self._emit(Event(self.view.now, "info", slot, "paused by user"))

    def resume(self, slot: int) -> None:
        self.calls.append(("resume", slot))
        self._set_state(slot, WorkerState.RUNNING)
        self._emit(Event(self.view.now, "info", slot, "resumed by user"))

    def stop(self, slot: int) -> None:
        self.calls.append(("stop", slot))
        self._set_state(slot, WorkerState.STOPPING)
        self._emit(Event(self.view.now, "info", slot, "stopping after the current tar"))

    def kill(self, slot: int) -> None:
        self.calls.append(("kill", slot))
        restarts = self._worker(slot).restarts + 1
        self._set_state(
            slot, WorkerState.BACKOFF, pid=None, restarts=restarts, last_error="killed by user"
        )
        self._emit(Event(self.view.now, "warning", slot, "killed by user; tar leased again"))

    def restart(self, slot: int) -> None:
        self.calls.append(("restart", slot))
        restarts = self._worker(slot).restarts + 1
        self._set_state(slot, WorkerState.STARTING, restarts=restarts)
        self._emit(Event(self.view.now, "info", slot, "restart requested by user"))

    def pause_all(self) -> None:
        self.calls.append(("pause_all",))
        for w in self.view.workers:
            if w.state == WorkerState.RUNNING:
                self._set_state(w.slot, WorkerState.PAUSED)

    def resume_all(self) -> None:
        self.calls.append(("resume_all",))
        for w in self.view.workers:
            if w.state == WorkerState.PAUSED:
                self._set_state(w.slot, WorkerState.RUNNING)

    def request_stop(self, force: bool = False) -> None:
        self.calls.append(("request_stop", force))
        self.view = replace(self.view, stopping=True)
        self._stop_requested = True
        self.force = self.force or force
        message = (
            "forced stop: killing every worker" if force else "stopping: aborting tars in progress"
        )
        self._emit(Event(self.view.now, "error" if force else "warning", None, message))
        if self._stop is not None:
            self._stop.set()


def fleet_view(n_gpus: int = 8, procs_per_gpu: int = 2, now: float = START + 7200.0) -> RunView:
    """A bigger machine: ``n_gpus * procs_per_gpu`` workers, all running."""
    workers = tuple(
        worker(
            slot,
            f"cuda:{slot // procs_per_gpu}",
            tar_index=100 + slot,
            tar_done=(slot * 1_537) % 25_000,
            tars_done=8 + slot % 3,
            rate=30.0 + slot,
        )
        for slot in range(n_gpus * procs_per_gpu)
    )
    samples = sum(w.samples_done for w in workers)
    return RunView(
        started_at=START,
        now=now,
        tars_total=2360,
        tars_done=sum(w.tars_done for w in workers),
        tars_skipped=0,
        tars_failed=0,
        samples_done=samples,
        samples_expected=None,
        errors=sum(w.errors for w in workers),
        audio_seconds=samples * SECONDS_PER_SAMPLE,
        memory_bytes=sum(w.rss_bytes for w in workers),
        memory_limit_bytes=100 * GIB,
        workers=workers,
        events=(Event(START + 1.0, "info", None, f"{2360} tars, 0 already done, 2360 to process"),),
        finished=False,
        stopping=False,
    )

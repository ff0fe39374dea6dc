"""The run's controls: what the dashboard's keys, signals and the memory watch may do.

A mixin of the ``Supervisor``: the controls change slots' wishes and intents and send the
workers their requests; the supervisor's loops do the rest (a killed worker's tar goes
back to the queue where its exit is handled, a restarted slot is started by its task).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from tartok_tui import messages as m
from tartok_tui.config import RunConfig
from tartok_tui.supervisor.restart import RestartPolicy
from tartok_tui.supervisor.slot import ExitIntent, Slot
from tartok_tui.supervisor.views import WorkerState


class RunControls:
    """Pause, resume, stop, kill, restart one slot or all; clean up, recycle; stop the run."""

    # Provided by the supervisor.
    config: RunConfig
    _slots: list[Slot]
    _stopping: bool
    _finished: bool
    _halted: tuple[int, str] | None
    _loop: asyncio.AbstractEventLoop | None
    _stop_timer: asyncio.TimerHandle | None

    def _event(self, level: str, slot: int | None, message: str) -> None:
        raise NotImplementedError

    def _dispatch(self) -> None:
        raise NotImplementedError

    def _new_policy(self) -> RestartPolicy:
        raise NotImplementedError

    def _guarded_slot(self, slot: Slot) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    def _slot(self, n: int) -> Slot:
        if not 0 <= n < len(self._slots):
            raise IndexError(f"no worker slot {n}")
        return self._slots[n]

    def _send(self, slot: Slot, msg: m.Message) -> None:
        if slot.process is not None and not slot.process.send(msg):
            self._event("warning", slot.n, f"could not send {msg.TYPE}: the worker is exiting")

    def pause(self, slot: int) -> None:
        """The worker takes no new batch (and no new tar) until resumed; the view says
        "pausing" until the worker acknowledges."""
        s = self._slot(slot)
        s.pause()
        self._send(s, m.Pause())
        self._event("info", slot, "pausing")

    def resume(self, slot: int) -> None:
        s = self._slot(slot)
        s.resume(time.monotonic())
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
        s.expect_exit(ExitIntent.STOP)
        self._send(s, m.Stop())
        s.wake.set()
        self._event("info", slot, "stopping after the current tar")

    def kill(self, slot: int) -> None:
        """SIGKILL the worker's process group now; its tar goes back to the queue and the
        slot restarts at once (a user kill does not count toward the crash loop)."""
        s = self._slot(slot)
        if s.process is not None:
            s.expect_exit(ExitIntent.KILL)
            s.process.kill()
            self._event("warning", slot, f"killed (pid {s.process.pid})")

    def restart(self, slot: int) -> None:
        """Abort the current tar (it goes back to the queue), exit, start a fresh worker.

        A slot in backoff restarts now; a FATAL or stopped slot is revived."""
        s = self._slot(slot)
        if s.process is not None:
            s.expect_exit(ExitIntent.RESTART)
            self._send(s, m.Abort())
        elif s.phase in (WorkerState.BACKOFF, WorkerState.STALLED):
            s.wake.set()
        elif s.task is not None and s.task.done() and not self._stopping and not self._finished:
            s.policy = self._new_policy()
            s.intent = ExitIntent.NONE
            s.phase = WorkerState.STARTING
            s.task = asyncio.get_running_loop().create_task(self._guarded_slot(s))
        self._event("info", slot, "restarting")

    def cleanup_all(self) -> None:
        """Ask every worker to free what it can now (gc, allocator caches, CUDA cache)."""
        for slot in self._slots:
            self._send(slot, m.Cleanup())

    def recycle(self, slot: int) -> None:
        """Replace the worker with a fresh process after its current tar."""
        s = self._slot(slot)
        if s.process is not None:
            s.expect_exit(ExitIntent.RECYCLE)
            self._send(s, m.Stop())

    def request_stop(self, force: bool = False) -> None:
        """Stop leasing, abort the tars in progress (they stay unfinished, resumable)
        and let workers exit; killed after stop_timeout_s. A second request kills now."""
        if self._stopping or force:
            self._stopping = True
            self._force_kill("forced stop: killing every worker")
            return
        self._stopping = True
        self._event("warning", None, "stopping: aborting tars in progress")
        self._abort_all()

    def _halt(self, code: int, reason: str) -> None:
        """The run stops itself: no new lease, tars in progress returned uncommitted."""
        if self._halted is None:
            self._halted = (code, reason)
            self._event("error", None, f"stopping the run: {reason}")
        if not self._stopping:
            self._stopping = True
            self._abort_all()

    def _abort_all(self) -> None:
        for slot in self._slots:
            if slot.process is not None:
                slot.expect_exit(ExitIntent.SHUTDOWN)
            self._send(slot, m.Abort())
            slot.wake.set()
        if self._loop is not None:
            self._stop_timer = self._loop.call_later(
                self.config.stop_timeout_s,
                self._force_kill,
                f"workers still alive after {self.config.stop_timeout_s:g} s: killing them",
            )

    def _force_kill(self, why: str) -> None:
        alive = [s for s in self._slots if s.process is not None]
        if alive:
            self._event("error", None, why)
        for slot in alive:
            assert slot.process is not None
            slot.process.kill()
        for slot in self._slots:
            slot.wake.set()

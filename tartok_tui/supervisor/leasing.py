"""Leases from the supervisor's side: giving tars to idle workers, and ending leases.

A mixin of the ``Supervisor`` (as ``controls.RunControls`` is): the queue's rules
(``queue.TarQueue``) say what becomes of a tar; this carries them out when a worker
reports the end of its lease (done, failed) or ends without reporting it (died, stalled,
killed, lost with its node), keeps the isolation journal's file in step
(``isolation.JournalStore``) and says what happened in the event log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tartok_tui import messages as m
from tartok_tui.config import RunConfig
from tartok_tui.exit_codes import ExitCode
from tartok_tui.output.journal import JournalEntry
from tartok_tui.stages import Stage
from tartok_tui.storage import Location, location_name
from tartok_tui.supervisor.isolation import JournalStore
from tartok_tui.supervisor.queue import ReturnCause, TarQueue
from tartok_tui.supervisor.run_output import RunOutput
from tartok_tui.supervisor.slot import ActiveLease, ExitIntent, Slot

_RETURNED: dict[str, tuple[ReturnCause, str]] = {
    "input": (ReturnCause.INPUT, "input unreadable"),
    "store": (ReturnCause.STORE, "upload failed"),
    "oom": (ReturnCause.OOM, "out of device memory"),
}
"""TarFailed kinds not the tar's fault: back to the queue a few times; what the event says."""


class Leasing:
    """Dispatch leases; end them as done, failed, returned or lost."""

    # Provided by the supervisor.
    config: RunConfig
    _slots: list[Slot]
    _queue: TarQueue[Location]
    _journals: JournalStore
    _output: RunOutput
    _stopping: bool
    _event: Callable[[str, int | None, str], None]
    _halt: Callable[[int, str], None]
    _stage_folder: Callable[[int], str | None]
    _staged: Callable[[int, ActiveLease, m.TarDone], None]
    _commits_wake: asyncio.Event
    _maybe_log_stats: Callable[[], None]
    _redact: Callable[[str], str]

    def _sample_decided(self, slot: Slot, msg: m.IsolationDone) -> None:
        """An isolated lease's sample has its outcome: into the queue's journal and the
        journal file, before the worker's next sample."""
        outcome = JournalEntry(msg.index, msg.key, msg.record, msg.stage, msg.reason)
        tar = self._queue.tar_of(msg.lease_id)
        if tar is None or not self._queue.sample_done(msg.lease_id, outcome):
            self._event("warning", slot.n, f"isolation result for no isolated lease: {msg.key}")
            return
        self._journals.record(tar, [outcome])

    def _tar_done(self, slot: Slot, msg: m.TarDone) -> None:
        lease = slot.lease_ended()
        if lease is None or lease.lease_id != msg.lease_id:
            self._event("warning", slot.n, f"{Path(msg.tar_path).name}: done for no lease")
            return
        stats = slot.stats
        stats.tars_done += 1
        stats.samples += msg.samples
        stats.errors += msg.errors
        stats.audio_s += msg.audio_seconds
        stats.model_s += msg.model_seconds
        stats.wall_s += msg.wall_seconds
        stats.batches += lease.progress.batches if lease.progress else 0
        slot.policy.record_success()
        if self._stage_folder(lease.lease_id) is not None:
            return self._staged(slot.n, lease, msg)
        self._queue.commit(
            lease.lease_id,
            samples=msg.samples,
            errors=msg.errors,
            audio_s=msg.audio_seconds,
            wall_s=msg.wall_seconds,
        )
        self._journals.remove(lease.tar)
        self._event(
            "info",
            slot.n,
            f"{location_name(lease.tar)} done: {msg.samples} samples, {msg.errors} errors, "
            f"{msg.audio_seconds / max(msg.wall_seconds, 1e-9):.1f}x real time",
        )
        self._maybe_log_stats()
        self._after_lease()

    def _tar_failed(self, slot: Slot, msg: m.TarFailed) -> None:
        lease = slot.lease_ended()
        name = Path(msg.tar_path).name
        msg = replace(msg, reason=self._redact(msg.reason))
        if msg.kind == "oom":
            # The worker exits now, for a clean allocator: no new lease for it meanwhile.
            slot.expect_exit(ExitIntent.OUT_OF_MEMORY)
        if lease is None or lease.lease_id != msg.lease_id:
            self._event("warning", slot.n, f"{name}: failure for no lease: {msg.reason}")
            return
        if self._done_meanwhile(slot, lease, f"is done already: {msg.reason}"):
            return
        if msg.kind == "output":
            self._queue.give_back(lease.lease_id, ReturnCause.INTENDED)
            self._halt(
                ExitCode.OUTPUT_UNAVAILABLE,
                f"the output takes no more data: {msg.reason}; free space (or fix the "
                "output) and run the same command again",
            )
            return
        returned = _RETURNED.get(msg.kind)
        if returned is not None:
            cause, what = returned
            back = self._queue.give_back(lease.lease_id, cause, msg.reason)
            if back.requeued:
                self._event("warning", slot.n, f"{name}: {what}, retried later: {msg.reason}")
            else:
                self._event("error", slot.n, f"{name} given up: {back.reason}")
        else:
            self._queue.fail(lease.lease_id, msg.reason)
            self._event("error", slot.n, f"{name} failed: {msg.reason}")
        self._after_lease()

    def _done_meanwhile(self, slot: Slot, lease: ActiveLease, event: str) -> bool:
        """Whether the leased tar's output exists all the same (committed by the worker
        before it died or failed, or by another run sharing the output, in either format):
        then the lease ends as done, nothing to redo."""
        if not self._output.is_done(lease.tar):
            return False
        self._queue.committed_elsewhere(lease.lease_id)
        self._journals.remove(lease.tar)
        self._event("info", slot.n, f"{location_name(lease.tar)} {event}")
        self._after_lease()
        return True

    def _after_lease(self) -> None:
        self._commits_wake.set()  # nothing but staged tars may be left: commit them now
        if not self._queue.work_remaining():
            # Slots waiting out a backoff have nothing left to restart for.
            for slot in self._slots:
                slot.wake.set()
        self._dispatch()

    # ------------------------------------------------------------------ leasing

    def _dispatch(self) -> None:
        """Give a tar to each idle worker; tell idle workers to exit once all work is done."""
        if self._stopping:
            return
        for slot in self._slots:
            if not slot.can_take_lease():
                continue
            grant = self._queue.lease()
            if grant is None:
                if not self._queue.work_remaining() and slot.process is not None:
                    slot.expect_exit(ExitIntent.DRAIN)
                    slot.process.send(m.Stop())
                continue
            name = location_name(grant.tar)
            if grant.newly_isolated:
                self._event(
                    "warning",
                    slot.n,
                    f"{name} killed {grant.kills} workers: processing it "
                    "sample by sample to find the culprit",
                )
            if grant.decided:
                crashes = sum(1 for e in grant.decided if e.stage == Stage.WORKER_CRASH)
                self._event(
                    "info",
                    slot.n,
                    f"{name}: sample by sample, {len(grant.decided)} samples decided "
                    f"earlier ({crashes} killed a worker)",
                )
            lease = ActiveLease(grant.lease_id, grant.tar, grant.isolate, time.monotonic())
            slot.leased(lease)
            assert slot.process is not None
            decided = [e.to_line() for e in grant.decided]
            stage_to = self._stage_folder(grant.lease_id)
            slot.process.send(
                m.Lease(grant.lease_id, str(grant.tar), grant.isolate, decided, stage_to)
            )

    def _lease_lost(
        self,
        slot: Slot,
        lease: ActiveLease,
        intent: ExitIntent,
        device_lost: bool = False,
        node_lost: str | None = None,
    ) -> None:
        """The worker ended without reporting the end of its lease. ``node_lost``: why its
        machine was lost, when it was (never the tar's fault, even after a stall)."""
        if self._done_meanwhile(slot, lease, "was committed before the worker died"):
            return
        name = location_name(lease.tar)
        if self._stopping or not intent.blames_tar:
            cause = ReturnCause.INTENDED
        elif node_lost is not None:
            cause = ReturnCause.NODE_LOST
        elif intent == ExitIntent.STALL:
            cause = ReturnCause.STALL
        else:
            cause = ReturnCause.DEVICE if device_lost else ReturnCause.CRASH
        back = self._queue.give_back(lease.lease_id, cause)
        if back.blamed is not None:
            self._journals.record(lease.tar, [back.blamed])
            self._event(
                "warning",
                slot.n,
                f"{name}: sample {back.blamed.key} killed its worker: "
                f"recorded as {back.blamed.stage}",
            )
        if not back.requeued:
            self._event("error", slot.n, f"{name} given up: {back.reason}")
        elif cause == ReturnCause.NODE_LOST:
            self._event(
                "warning", slot.n, f"{name} back in the queue, not counted against it: {node_lost}"
            )
        self._after_lease()

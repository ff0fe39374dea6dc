"""The supervisor's half of batched Hub commits (see ``output.hub_commit``).

For an ``hf://`` output each lease names a staged folder; a worker that finishes the tar
reports TarDone, which here means "staged": its slot takes the next tar at once, while
the tar's lease stays open in the queue (neither done nor pending) until its commit
lands. One task commits the staged tars when a batch is due; a landed commit makes its
tars done, a failed one gives them back (redone, never half-committed), a refused one
stops the run (exit 4). A supervisor killed before a commit leaves its tars undone: the
next run sweeps the staged folders and redoes them.

Why the supervisor and not each worker: the commit rate must stay far below the Hub's
per-repository limit whatever the number of workers, and only one committer for the
whole run can promise that; the exactly-once rule stays the queue's (a lease ends
committed only after the commit). See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from tartok_tui import messages as m
from tartok_tui.config import RunConfig
from tartok_tui.exit_codes import ExitCode
from tartok_tui.output.hub_commit import (
    CommitBatch,
    HubCommitter,
    StagedTar,
    commits_in_batches,
    hub_output,
)
from tartok_tui.output.paths import tar_output_paths
from tartok_tui.output.staging import staged_folder
from tartok_tui.output.store import StoreOutput
from tartok_tui.output.target import OutputUnavailable
from tartok_tui.storage import Location, location_name
from tartok_tui.supervisor.isolation import JournalStore
from tartok_tui.supervisor.queue import ReturnCause, TarQueue
from tartok_tui.supervisor.run_output import RunOutput
from tartok_tui.supervisor.slot import ActiveLease


class BatchedCommits:
    """A mixin of the ``Supervisor``: staging leases and committing them in batches."""

    # Provided by the supervisor.
    config: RunConfig
    _queue: TarQueue[Location]
    _output: RunOutput
    _journals: JournalStore

    def _event(self, level: str, slot: int | None, message: str) -> None:
        raise NotImplementedError

    def _halt(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def _after_lease(self) -> None:
        raise NotImplementedError

    def _init_commits(self) -> None:
        config = self.config
        self._batch: CommitBatch | None = None
        if commits_in_batches(config.output_dir):
            self._batch = CommitBatch(config.hub_commit_tars, config.hub_commit_every_s)
        self._committer: HubCommitter | None = None
        self._commits_wake = asyncio.Event()
        self._commits_closing = False
        self._commit_refused = False

    def _stage_folder(self, lease_id: int) -> str | None:
        """The folder a lease stages its tar in (None: the worker commits it itself)."""
        if self._batch is None:
            return None
        return str(staged_folder(self.config.local_output_dir, lease_id))

    def _staged(self, slot: int, lease: ActiveLease, msg: m.TarDone) -> None:
        """The worker finished a staged lease: the tar waits for the next commit."""
        assert self._batch is not None
        config = self.config
        paths = tar_output_paths(
            config.local_output_dir, config.input_dir, lease.tar, config.output_format
        )
        folder = Path(staged_folder(config.local_output_dir, lease.lease_id))
        now = time.monotonic()
        self._batch.add(StagedTar(lease.lease_id, lease.tar, folder, paths.rel_tokens, now, msg))
        self._event(
            "info",
            slot,
            f"{location_name(lease.tar)} staged: {msg.samples} samples, {msg.errors} errors; "
            f"in the next Hub commit ({len(self._batch)}/{self._batch.max_tars} tars)",
        )
        self._after_lease()

    # -- the committing task -----------------------------------------------------------------

    async def _commit_when_due(self) -> None:
        """Alongside the slots: commit a batch whenever one is due, until closed (at once
        without batched commits)."""
        while self._batch is not None and not self._commits_closing:
            now = time.monotonic()
            idle = self._queue.pending == 0 and self._queue.leased == len(self._batch)
            if self._batch.due(now, idle=idle):
                await self._commit(self._batch.take())
                continue
            self._commits_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._commits_wake.wait(), self._batch.wait_s(now))

    async def _close_commits(self, task: asyncio.Task[None]) -> None:
        """The slots are done: let a commit under way finish (never cancelled half-way),
        then commit what is left (a stopped run keeps what its workers finished)."""
        self._commits_closing = True
        self._commits_wake.set()
        await task
        while self._batch:
            await self._commit(self._batch.take())

    async def _commit(self, tars: Sequence[StagedTar]) -> None:
        if self._commit_refused:
            await self._uncommitted(tars, ReturnCause.INTENDED, "the output refused a commit")
            return
        started = time.monotonic()
        try:
            committer = self._committer
            if committer is None:
                committer = self._committer = await asyncio.to_thread(self._new_committer)
            await asyncio.to_thread(committer.commit, tars)
        except OutputUnavailable as exc:
            self._commit_refused = True
            await self._uncommitted(tars, ReturnCause.INTENDED, str(exc))
            self._halt(
                ExitCode.OUTPUT_UNAVAILABLE,
                f"the output takes no more data: {exc}; free space (or fix the output) "
                "and run the same command again",
            )
        except Exception as exc:  # unreachable store, a Hub error, a missing staged file
            await self._uncommitted(tars, ReturnCause.STORE, f"{type(exc).__name__}: {exc}")
        else:
            for tar in tars:
                self._count_done(tar)
            self._event(
                "info",
                None,
                f"Hub commit: {len(tars)} tar{'s' if len(tars) > 1 else ''} done in one "
                f"commit ({time.monotonic() - started:.1f} s)",
            )
        finally:
            for tar in tars:
                shutil.rmtree(tar.folder, ignore_errors=True)
        self._after_lease()

    def _new_committer(self) -> HubCommitter:
        store = StoreOutput(str(self.config.output_dir), self._output.access)
        repo, api = hub_output(store)
        return HubCommitter(store, repo, api)

    def _count_done(self, tar: StagedTar) -> None:
        done: m.TarDone = tar.done
        self._queue.commit(
            tar.lease_id,
            samples=done.samples,
            errors=done.errors,
            audio_s=done.audio_seconds,
            wall_s=done.wall_seconds,
        )
        self._journals.remove(tar.tar)

    async def _uncommitted(self, tars: Sequence[StagedTar], cause: ReturnCause, why: str) -> None:
        """The commit did not land (as far as we know): each tar goes back to the queue,
        unless the store shows it done after all (a commit whose answer was lost lands
        whole, so its tars are done)."""
        for tar in tars:
            if cause == ReturnCause.STORE and await asyncio.to_thread(
                self._output.is_done, tar.tar
            ):
                self._count_done(tar)
                continue
            back = self._queue.give_back(tar.lease_id, cause, why)
            name = location_name(tar.tar)
            if back.requeued:
                self._event("warning", None, f"{name}: Hub commit failed, redone later: {why}")
            else:
                self._event("error", None, f"{name} given up: {back.reason}")

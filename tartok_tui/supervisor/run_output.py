"""The run's output as the supervisor sees it: which tars are done, the stale partial
files of dead writers, and the run summary (written locally, uploaded to an output URL).

The supervisor's own calls to an output URL (the listing at start, checks, the summary,
Hub commits) share one ``Access``: a throttled store is one event per episode, however
many retries it takes; a network retry is a line in the log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from tartok_tui.config import RunConfig
from tartok_tui.output.files import done_format_now, done_formats
from tartok_tui.output.manifest import MANIFEST_NAME, write_manifest
from tartok_tui.output.paths import SUMMARY_NAME, remove_stale_partials, summary_path
from tartok_tui.output.staging import sweep_staged
from tartok_tui.storage import (
    Access,
    Location,
    RetryEvent,
    RetryPolicy,
    ThrottleGauge,
    ThrottlePolicy,
    location_name,
    redact_location,
)
from tartok_tui.supervisor.preflight import ValidatedRun
from tartok_tui.supervisor.summary import RunSummary, write_summary

log = logging.getLogger("tartok_tui.supervisor")

Report = Callable[[str, int | None, str], None]


def _network_retry(event: RetryEvent) -> None:
    if not event.throttled:  # throttling: one event per episode (the gauge)
        log.warning("%s", event)


class RunOutput:
    """``report(level, slot, message)``: the supervisor's event log (its loop's thread)."""

    def __init__(self, config: RunConfig, report: Report) -> None:
        self.config = config
        self._report = report
        self._loop: asyncio.AbstractEventLoop | None = None
        gauge = ThrottleGauge(on_episode=self._throttled)
        self.access = Access(config.storage_options, on_retry=_network_retry, gauge=gauge)
        self.fingerprint = ""
        """The run manifest's fingerprint (set by ``start``), given to every worker."""

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop whose thread ``report`` must run on (calls come from worker threads)."""
        self._loop = loop

    def report_soon(self, level: str, message: str) -> None:
        """An event from any thread."""
        if self._loop is None:
            self._report(level, None, message)
        else:
            self._loop.call_soon_threadsafe(self._report, level, None, message)

    def _throttled(self, what: str) -> None:
        patience = self.access.throttle.patience_s / 60
        self.report_soon(
            "warning",
            f"throttled by the output's store ({what}): waiting, up to {patience:.0f} min",
        )

    async def start(self, validated: ValidatedRun, ignored: Sequence[str]) -> list[Location]:
        """Before the first lease: sweep dead writers' partial files, find the tars already
        done, record the manifest, name the shard-like files that are not read."""
        self.fingerprint = validated.manifest.fingerprint if validated.manifest else ""
        self.sweep_partials("an earlier run")
        done = await self.done_at_start(validated.tars)
        await self.record_manifest(validated, bool(done))
        if ignored:
            more = f" and {len(ignored) - 10} more" if len(ignored) > 10 else ""
            self._report(
                "warning",
                None,
                f"{len(ignored)} files look like shards but are not read "
                f"(not .tar, .tar.gz or .tgz): {', '.join(ignored[:10])}{more}",
            )
        return done

    async def done_at_start(self, tars: Sequence[Location]) -> list[Location]:
        """The tars already done, from one listing of an output URL (not a request per tar);
        says where an output URL's files are built and what is done in the other format."""
        config = self.config
        if config.output_is_url:
            self._report(
                "info",
                None,
                f"output {redact_location(config.output_dir)}: files are built in "
                f"{config.local_output_dir} and uploaded whole; worker logs in "
                f"{config.logs_path}",
            )
        formats = await asyncio.to_thread(
            done_formats,
            config.output_dir,
            config.input_dir,
            list(tars),
            config.output_format,
            self.access,
        )
        other = sum(1 for fmt in formats.values() if fmt not in (None, config.output_format))
        if other:
            self._report(
                "warning",
                None,
                f"{other} tars already done in another output format than "
                f"{config.output_format}: kept as they are, not redone",
            )
        return [t for t, fmt in formats.items() if fmt is not None]

    async def record_manifest(self, validated: ValidatedRun, any_done: bool) -> None:
        """Write the run manifest into an output that has none, before any tar is committed
        (preflight refused an output whose manifest differs). An output with done tars and
        no manifest was written before manifests existed: it is adopted, with a warning."""
        if validated.manifest is None or validated.output_manifest is not None:
            return
        await asyncio.to_thread(
            write_manifest, self.config.output_dir, validated.manifest, self.access
        )
        if any_done:
            self._report(
                "warning",
                None,
                f"the output had no {MANIFEST_NAME} (written by an older version): adopted "
                "for this run's model and options; tars done before cannot be told apart "
                "(`tartok-tui verify` lists them)",
            )

    def is_done(self, tar: Location) -> bool:
        """Whether the tar's output exists now, in either format.

        For an output URL, one request per format, not retried (this runs on the event
        loop): a tar that cannot be checked counts as not done, and is done again (its
        objects are replaced by identical ones, so it is still there exactly once)."""
        access = Access(
            self.access.options, retry=RetryPolicy(tries=1), throttle=ThrottlePolicy(patience_s=0)
        )
        config = self.config
        try:
            fmt = done_format_now(
                config.output_dir, config.input_dir, tar, config.output_format, access
            )
        except OSError as exc:
            if not config.output_is_url:
                raise
            self.report_soon("warning", f"could not check {location_name(tar)}: {exc}")
            return False
        return fmt is not None

    def sweep_partials(self, whose: str, *, own: bool = False) -> None:
        """Partial files of dead writers, and staged folders never committed (of dead
        supervisors; ``own``: this one's too, at the end of its run)."""
        try:
            removed = remove_stale_partials(self.config.local_output_dir)
            removed += sweep_staged(self.config.local_output_dir, own=own)
        except OSError as exc:
            self._report("warning", None, f"could not clean stale partial files: {exc}")
            return
        if removed:
            self._report("info", None, f"removed {len(removed)} partial files left by {whose}")

    def write_summary(self, summary: RunSummary) -> None:
        try:
            write_summary(summary, summary_path(self.config.local_output_dir))
        except OSError as exc:
            # The outputs are committed either way; a missing summary must not hide the result.
            self._report("error", None, f"could not write the run summary: {exc}")

    def upload_summary(self) -> None:
        """The summary written locally (in the spool folder) goes to the output URL too."""
        from tartok_tui.output.store import StoreOutput

        local = summary_path(self.config.local_output_dir)
        try:
            StoreOutput(str(self.config.output_dir), self.access).upload(local, SUMMARY_NAME)
        except OSError as exc:
            self._report(
                "error", None, f"could not upload the run summary (kept at {local}): {exc}"
            )

"""The run's output as the supervisor sees it: which tars are done, the stale partial
files of dead writers, and the run summary (written locally, uploaded to an output URL)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from tartok_tui.config import RunConfig
from tartok_tui.output.files import done_format_now, done_formats
from tartok_tui.output.manifest import MANIFEST_NAME, write_manifest
from tartok_tui.output.paths import SUMMARY_NAME, remove_stale_partials, summary_path
from tartok_tui.storage import Access, Location, RetryPolicy, location_name, redact_location
from tartok_tui.supervisor.preflight import ValidatedRun
from tartok_tui.supervisor.summary import RunSummary, write_summary

Report = Callable[[str, int | None, str], None]


class RunOutput:
    """``report(level, slot, message)``: the supervisor's event log."""

    def __init__(self, config: RunConfig, access: Access, report: Report) -> None:
        self.config = config
        self._access = access
        self._report = report
        self.fingerprint = ""
        """The run manifest's fingerprint (set by ``start``), given to every worker."""

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
            self._access,
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
            write_manifest, self.config.output_dir, validated.manifest, self._access
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
        access = Access(self._access.options, retry=RetryPolicy(tries=1))
        config = self.config
        try:
            fmt = done_format_now(
                config.output_dir, config.input_dir, tar, config.output_format, access
            )
        except OSError as exc:
            if not config.output_is_url:
                raise
            self._report("warning", None, f"could not check {location_name(tar)}: {exc}")
            return False
        return fmt is not None

    def sweep_partials(self, whose: str) -> None:
        try:
            removed = remove_stale_partials(self.config.local_output_dir)
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
            StoreOutput(str(self.config.output_dir), self._access).upload(local, SUMMARY_NAME)
        except OSError as exc:
            self._report(
                "error", None, f"could not upload the run summary (kept at {local}): {exc}"
            )

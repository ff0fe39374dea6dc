"""One lease's state and its output side: records to the writer, counts, progress messages."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tartok_tui import messages as m
from tartok_tui.codec.tokenizer import TokenizeError, Tokens
from tartok_tui.output.tarmeta import InputIdentity
from tartok_tui.output.writer import TarWriter, make_record
from tartok_tui.shards.reader import Sample
from tartok_tui.stages import Stage
from tartok_tui.worker.channel import RESOURCES_EVERY_S, Channel, gpu_resources
from tartok_tui.worker.heartbeat import ProgressCounter

SAMPLE_RATE = 16000
PROGRESS_EVERY_S = 0.25
"""At most ~4 progress messages a second: enough for a live view, cheap for the pipe."""
MODEL_ERRORS_MAX_SHARE = 0.05
MODEL_ERRORS_MAX_CLIPS = 3
"""A tar with more than this share *and* more than this many ``model`` error records is not
committed: errors that many are the model's or the device's, not the clips'."""


class TooManyModelErrors(Exception):
    """The tar got more model errors than a good run ever gives; it is failed, not committed."""


@dataclass
class Entry:
    """One sample on its way to the output file."""

    index: int
    key: str
    sample: Sample
    clip: Any = None
    """The tokenizer's prepared clip (only ``len(clip)``, its 16 kHz samples, is used here)."""
    record: dict | None = None
    error: tuple[str, str] | None = None
    """(stage, reason) when the sample gets an error record instead of tokens."""
    held_back: bool = False
    """Left out of a batch once already (see LeaseRunner._dispatch)."""


@dataclass
class LeaseState:
    """What one lease has done so far (the figures of Progress and TarDone)."""

    lease: m.Lease
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    errors: int = 0
    model_errors: int = 0
    audio_s: float = 0.0
    batches: int = 0
    model_s: float = 0.0
    last_batch_ms: float = 0.0
    last_batch_size: int = 0
    last_progress: float = 0.0
    scan: tuple[int, bool] | None = None
    """(samples, clean) from the header scan run alongside: the count before any damage,
    and whether the archive ended with its end marker. Set once, from the count thread."""
    scan_keys: list[str] | None = None
    """The keys the header scan found, in tar order (recorded as the input's at commit)."""
    input: InputIdentity | None = None
    """The input tar's size and ETag or mtime when the lease started."""
    read_clean: bool = False
    """The reader met the archive's end marker with no damage on the way."""

    @property
    def expected(self) -> int | None:
        """The tar's sample count once counted (for the progress bar)."""
        return self.scan[0] if self.scan is not None else None

    @property
    def clean_count(self) -> int | None:
        """The count from a scan that met the end marker (an upper bound on what the
        reader can yield, whatever it meets)."""
        return self.scan[0] if self.scan is not None and self.scan[1] else None

    def restart(self) -> None:
        """Forget what a dropped attempt did (the scan, from headers alone, still holds)."""
        self.started = time.monotonic()
        self.done = self.errors = self.model_errors = self.batches = 0
        self.audio_s = self.model_s = self.last_batch_ms = 0.0
        self.last_batch_size = 0
        self.read_clean = False

    def commit_count(self) -> int | None:
        """The count the writer must have results for, when it is certain: both the scan
        and the reader saw the whole tar end cleanly. A damaged tar ends where the damage
        is, which the two may see differently, so its count is not checked."""
        if self.scan is None or not self.scan[1] or not self.read_clean:
            return None
        return self.scan[0]

    def model_errors_excessive(self, total: int | None) -> bool:
        """Whether the model errors so far exceed the limit for a tar of `total` samples."""
        if total is None:
            return False
        return (
            self.model_errors > MODEL_ERRORS_MAX_CLIPS
            and self.model_errors > MODEL_ERRORS_MAX_SHARE * total
        )


class LeaseOutput:
    """Turns a lease's results into records for its writer and messages for the supervisor."""

    def __init__(
        self,
        state: LeaseState,
        writer: TarWriter,
        channel: Channel,
        counter: ProgressCounter,
        device: str,
        redact: Callable[[str], str] = str,
    ) -> None:
        self.state = state
        self.writer = writer
        self.channel = channel
        self.counter = counter
        self.device = device
        self.redact = redact
        """Removes secrets from an error record's reason (an exception's text may hold a
        URL with a signature)."""
        self._last_resources = 0.0

    def batch_done(
        self,
        entries: list[Entry],
        results: list[Tokens | TokenizeError],
        latency: float,
        busy: float,
    ) -> None:
        """Turn a batch's results into records; `busy`: model wall time to add for it."""
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, Tokens):
                entry.record = make_record(
                    entry.sample.key,
                    entry.sample.meta,
                    result.global_tokens,
                    result.semantic_tokens,
                )
            else:
                entry.error = (result.stage, result.reason)
        state = self.state
        state.batches += 1
        state.model_s += busy
        state.last_batch_ms = latency * 1000.0
        state.last_batch_size = len(entries)
        self.counter.advance()
        self.progress()

    def write(self, entry: Entry) -> None:
        """Give one sample's record or error record to the writer."""
        state = self.state
        state.done += 1
        if entry.record is not None:
            self.writer.add(entry.index, entry.record)
            if entry.clip is not None:
                state.audio_s += len(entry.clip) / SAMPLE_RATE
        else:
            stage, reason = entry.error or ("tokenize", "no result")
            reason = self.redact(reason)
            state.errors += 1
            self.writer.add_error(entry.index, entry.key, stage, reason)
            self.channel.send(
                m.SampleError(state.lease.lease_id, state.lease.tar_path, entry.key, stage, reason)
            )
            if stage == "model":
                state.model_errors += 1
                # Known to fail already: stop spending the device on a tar that will not commit.
                self.check_model_errors(state.clean_count)
        entry.clip = None
        self.counter.advance()
        self.progress()

    def tar_error(self, reason: str) -> None:
        state = self.state
        reason = self.redact(reason)
        state.errors += 1
        self.writer.add_error(None, None, Stage.TAR, reason)
        self.channel.send(
            m.SampleError(state.lease.lease_id, state.lease.tar_path, None, Stage.TAR, reason)
        )

    def check_model_errors(self, total: int | None) -> None:
        """TooManyModelErrors when the model errors exceed the limit for `total` samples."""
        state = self.state
        if state.model_errors_excessive(total):
            raise TooManyModelErrors(
                f"{state.model_errors} clips got model errors "
                f"(of {total} samples; the limit is {MODEL_ERRORS_MAX_CLIPS} and "
                f"{MODEL_ERRORS_MAX_SHARE:.0%}): not committed"
            )

    def progress(self, force: bool = False) -> None:
        state = self.state
        now = time.monotonic()
        if not force and now - state.last_progress < PROGRESS_EVERY_S:
            return
        state.last_progress = now
        if now - self._last_resources >= RESOURCES_EVERY_S:
            self._last_resources = now
            self.channel.send(gpu_resources(self.device))
        self.channel.send(
            m.Progress(
                lease_id=state.lease.lease_id,
                samples_done=state.done,
                errors=state.errors,
                audio_seconds=state.audio_s,
                batches=state.batches,
                model_seconds=state.model_s,
                last_batch_ms=state.last_batch_ms,
                last_batch_size=state.last_batch_size,
                samples_expected=state.expected,
            )
        )

    def done_message(self) -> m.TarDone:
        state = self.state
        return m.TarDone(
            lease_id=state.lease.lease_id,
            tar_path=state.lease.tar_path,
            samples=state.done,
            errors=state.errors,
            audio_seconds=state.audio_s,
            wall_seconds=time.monotonic() - state.started,
            model_seconds=state.model_s,
        )

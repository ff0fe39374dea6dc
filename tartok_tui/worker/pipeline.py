"""One lease: stream a tar, decode ahead of the model, batch by length, tokenize, write.

Samples flow through three stages. A reader thread walks the tar and hands
each sample's audio to a small decode pool, queueing (sample, future) pairs in
a bounded queue so decoding runs ahead of the model without holding the whole
tar in memory. The lease thread gathers a window of decoded samples, lets the
tokenizer plan length-sorted batches inside it and starts each on a free stream
of the tokenizer (pause, abort and cleanup requests take effect between
batches). There is no barrier between windows: the next window gathers while
the last batches of one run, and a stream that would idle takes the clips
decoded so far. Batches are written as they end; the TarWriter puts the
results back in the tar's sample order.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tartok_tui import messages as m
from tartok_tui.audio import AudioError
from tartok_tui.codec.tokenizer import BiCodecTokenizer, TokenizeError, Tokens
from tartok_tui.output.journal import IsolationJournal
from tartok_tui.output.writer import TarWriter, make_record
from tartok_tui.shards.reader import Sample, TarDamage, count_samples, iter_samples
from tartok_tui.worker.channel import RESOURCES_EVERY_S, Channel, Control, gpu_resources
from tartok_tui.worker.faults import Faults
from tartok_tui.worker.options import WorkerOptions

log = logging.getLogger("tartok_tui.worker")

PROGRESS_EVERY_S = 0.25
"""At most ~4 progress messages a second: enough for a live view, cheap for the pipe."""
WINDOW_MAX_SAMPLES = 256
WINDOW_BATCHES = 4
"""A window holds about this many model batches of audio, so planning by length
has choice without buffering much (4 x 240 s of 16 kHz float32 is ~60 MB)."""
SAMPLE_RATE = 16000


class LeaseAborted(Exception):
    """The supervisor asked to abort (or vanished); nothing of this tar is committed."""


def load_tokenizer(opts: WorkerOptions) -> BiCodecTokenizer:
    import torch

    torch.set_num_threads(opts.threads)
    tokenizer = BiCodecTokenizer.load(
        opts.model_dir,
        device=opts.device,
        precision=opts.precision,
        batch_seconds=opts.batch_seconds,
        streams=opts.streams or None,
    )
    # Part of loading: a worker whose model cannot run says so before it takes a tar.
    tokenizer.warm_up()
    return tokenizer


@dataclass
class _Entry:
    """One sample on its way to the output file."""

    index: int
    key: str
    sample: Sample
    wav: Any = None
    record: dict | None = None
    error: tuple[str, str] | None = None
    """(stage, reason) when the sample gets an error record instead of tokens."""


@dataclass
class _ReaderFailed:
    reason: str
    unreadable: bool = False
    """The file could not be opened or read at all: fail the lease (nothing committed,
    the next run retries) instead of committing an error record for a tar we never saw."""


_END = object()


_STREAM_FREE = object()
"""From _Feed.next(): a stream is free and decoded clips wait in the window."""


class _RunningBatches:
    """Batches running on the tokenizer's streams (at most one per stream); each is
    recorded and written as soon as it ends.

    Pause, abort and cleanup act between submissions: a pause or a cleanup first lets
    the running batches end, so "paused" means no batch running and cleanup frees the
    most.
    """

    def __init__(self, runner: LeaseRunner, writer: TarWriter) -> None:
        self.runner = runner
        self.writer = writer
        self.running: dict[Future, tuple[list[_Entry], float]] = {}
        # Model wall time is counted once however many batches run at once: from the
        # last accounting mark, while at least one batch is running.
        self._mark = 0.0

    def free(self) -> bool:
        return len(self.running) < self.runner.tokenizer.streams

    def submit(self, entries: list[_Entry]) -> None:
        runner = self.runner
        while not self.free():
            self.collect(block=True)
        if runner.control.paused.is_set() or runner.control.cleanup.is_set():
            self.drain()
        runner._checkpoint()
        runner.faults.before_batch(e.key for e in entries)
        now = time.monotonic()
        if not self.running:
            self._mark = now
        self.running[runner.tokenizer.submit([e.wav for e in entries])] = (entries, now)

    def collect(self, block: bool) -> None:
        """Record and write the batches that have ended (waiting for one if `block`)."""
        if not self.running:
            return
        done, _ = wait(
            list(self.running), timeout=None if block else 0, return_when=FIRST_COMPLETED
        )
        if not done:
            return
        now = time.monotonic()
        busy = now - self._mark
        self._mark = now
        for future in done:
            entries, submitted = self.running.pop(future)
            self.runner._record(entries, future.result(), now - submitted, busy)
            busy = 0.0
            for entry in entries:
                self.runner._write(entry, self.writer)

    def drain(self) -> None:
        while self.running:
            self.collect(block=True)

    def abandon(self) -> None:
        """Drop the batches still running (an aborted or failed lease): wait for them to
        end, write nothing."""
        running, self.running = list(self.running), {}
        for future in running:
            future.cancel()
        wait(running)


class _Feed:
    """The reader's (sample, decode future) items, taken in tar order; while waiting for
    the next one it writes batches that end and says when a stream would idle."""

    POLL_S = 0.01
    """How often to look for a batch that ended while the reader's queue is empty
    (input slower than the model; the queue has no way to wake us)."""

    def __init__(self, prefetch: queue.Queue, batches: _RunningBatches) -> None:
        self.prefetch = prefetch
        self.batches = batches
        self._head: Any = None
        """The item taken from the queue and not yet returned (items are never None)."""

    def next(self, window_waiting: bool) -> Any:
        """The next item once it is decoded, or _STREAM_FREE when `window_waiting` and a
        stream has nothing to run."""
        batches = self.batches
        while True:
            batches.collect(block=False)
            if self._head is None:
                try:
                    self._head = self.prefetch.get_nowait()
                except queue.Empty:
                    if window_waiting and batches.free():
                        return _STREAM_FREE
                    try:
                        self._head = self.prefetch.get(
                            timeout=self.POLL_S if batches.running else None
                        )
                    except queue.Empty:
                        continue
            future = self._head[1] if isinstance(self._head, tuple) else None
            if future is None or future.done():
                item, self._head = self._head, None
                return item
            if window_waiting and batches.free():
                return _STREAM_FREE
            # Wake when the clip is decoded or a batch ends, whichever comes first.
            wait([future, *batches.running], return_when=FIRST_COMPLETED)


class LeaseRunner:
    """Processes leases one after another with one loaded tokenizer."""

    def __init__(
        self,
        tokenizer: BiCodecTokenizer,
        opts: WorkerOptions,
        control: Control,
        channel: Channel,
        faults: Faults,
    ) -> None:
        self.tokenizer = tokenizer
        self.opts = opts
        self.control = control
        self.channel = channel
        self.faults = faults
        self._last_resources = 0.0
        self.pool = ThreadPoolExecutor(
            max_workers=opts.resolved_decode_workers, thread_name_prefix="decode"
        )

    # ------------------------------------------------------------------ per lease

    def run(self, lease: m.Lease) -> None:
        tar_path = Path(lease.tar_path)
        self._lease = lease
        self._started = time.monotonic()
        self._done = 0
        self._errors = 0
        self._audio = 0.0
        self._batches = 0
        self._model_s = 0.0
        self._last_batch_ms = 0.0
        self._last_batch_size = 0
        self._last_progress = 0.0
        self._journal_to_remove: IsolationJournal | None = None
        self._expected: int | None = None
        # Counting reads every member header (a few seconds on a big tar on a slow disk):
        # done alongside, so the model starts at once; progress carries the count when known.
        threading.Thread(
            target=self._count, args=(lease, tar_path), name="count", daemon=True
        ).start()
        self.channel.send(m.TarStarted(lease.lease_id, lease.tar_path, None))
        writer = TarWriter(
            self.opts.output_dir, self.opts.input_dir, tar_path, lease_id=lease.lease_id
        )
        try:
            if lease.isolate:
                self._run_isolated(tar_path, writer)
            else:
                self._run_streaming(tar_path, writer)
            self._checkpoint()
            writer.commit()
            # Committed: a journal (this attempt's, or one an earlier run left) has served
            # its purpose and must not blame a sample in some later run.
            if self._journal_to_remove is not None:
                self._journal_to_remove.remove()
            else:
                writer.paths.journal.unlink(missing_ok=True)
        except LeaseAborted:
            writer.abort()
            raise
        except Exception as exc:
            log.exception("tar %s failed", tar_path)
            writer.abort()
            self.channel.send(
                m.TarFailed(lease.lease_id, lease.tar_path, f"{type(exc).__name__}: {exc}")
            )
            return
        self._progress(force=True)
        self.channel.send(
            m.TarDone(
                lease_id=lease.lease_id,
                tar_path=lease.tar_path,
                samples=self._done,
                errors=self._errors,
                audio_seconds=self._audio,
                wall_seconds=time.monotonic() - self._started,
                model_seconds=self._model_s,
            )
        )

    def _count(self, lease: m.Lease, tar_path: Path) -> None:
        try:
            count = count_samples(tar_path)
            if self._lease is lease:  # not a late answer about an earlier tar
                self._expected = count
        except Exception as exc:
            # Counting is only for the progress bar; a damaged tar is reported by the reader.
            log.warning("could not count samples of %s: %s", tar_path, exc)

    def cleanup(self) -> None:
        self.control.cleanup.clear()
        self.tokenizer.cleanup()
        self.channel.send(gpu_resources(self.opts.device))

    # ------------------------------------------------------------------ streaming mode

    def _run_streaming(self, tar_path: Path, writer: TarWriter) -> None:
        # Deep enough that a GPU batch's worth of clips is decoded while the model runs
        # the previous one; bounded so a tar of long clips cannot fill memory.
        prefetch: queue.Queue = queue.Queue(maxsize=max(16, 8 * self.opts.resolved_decode_workers))
        stop_reading = threading.Event()
        reader = threading.Thread(
            target=self._read_tar,
            args=(tar_path, prefetch, stop_reading),
            name="tar-reader",
            daemon=True,
        )
        reader.start()
        batches = _RunningBatches(self, writer)
        feed = _Feed(prefetch, batches)
        window: list[_Entry] = []
        window_seconds = 0.0
        seconds_cap = WINDOW_BATCHES * self.opts.batch_seconds
        try:
            while True:
                item = feed.next(window_waiting=bool(window))
                if item is _STREAM_FREE:
                    # A stream would idle: hand it what is decoded rather than wait for a
                    # full window (which only sorts batches by length).
                    self._submit_window(window, batches, writer)
                    window, window_seconds = [], 0.0
                    continue
                if item is _END:
                    break
                if isinstance(item, _ReaderFailed) and item.unreadable:
                    raise OSError(item.reason)
                if isinstance(item, (TarDamage, _ReaderFailed)):
                    self._submit_window(window, batches, writer)
                    window, window_seconds = [], 0.0
                    self._tar_error(writer, item.reason)
                    continue
                sample, future = item
                entry = self._resolve(sample, future)
                window.append(entry)
                if entry.wav is not None:
                    window_seconds += len(entry.wav) / SAMPLE_RATE
                if len(window) >= WINDOW_MAX_SAMPLES or window_seconds >= seconds_cap:
                    self._submit_window(window, batches, writer)
                    window, window_seconds = [], 0.0
            self._submit_window(window, batches, writer)
            batches.drain()
        finally:
            # Aborted or failed: what is running cannot be interrupted; let it end before
            # the lease is given up, so no stream is still busy with a dropped tar.
            batches.abandon()
            stop_reading.set()
            # Unblock a reader waiting on a full queue so it sees the stop flag.
            while reader.is_alive():
                with contextlib.suppress(queue.Empty):
                    prefetch.get(timeout=0.05)

    def _read_tar(self, tar_path: Path, out: queue.Queue, stop: threading.Event) -> None:
        def put(item) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for item in iter_samples(tar_path, self.opts.audio_exts):
                if isinstance(item, TarDamage):
                    if not put(item):
                        return
                    continue
                future = None
                if item.problem is None and item.audio is not None:
                    future = self.pool.submit(self._decode, item.audio)
                    item.audio = None  # the bytes live on in the decode task only
                if not put((item, future)):
                    return
        except OSError as exc:
            # iter_samples reports damage as TarDamage; an OSError is the file itself
            # (missing, unreadable, I/O error): maybe transient, so not the tar's fault.
            log.exception("cannot read %s", tar_path)
            if not put(_ReaderFailed(f"{type(exc).__name__}: {exc}", unreadable=True)):
                return
        except Exception as exc:
            # Anything else is still a tar-level error record, never a dead worker.
            log.exception("reading %s failed", tar_path)
            if not put(_ReaderFailed(f"{type(exc).__name__}: {exc}")):
                return
        put(_END)

    def _decode(self, data: bytes):
        return self.tokenizer.prepare(data, max_seconds=self.opts.max_duration)

    def _resolve(self, sample: Sample, future: Future | None) -> _Entry:
        entry = _Entry(sample.index, sample.key, sample)
        if sample.problem is not None:
            entry.error = ("sample", sample.problem)
        elif future is None:
            entry.error = ("sample", "no audio")
        else:
            try:
                entry.wav = future.result()
            except AudioError as exc:
                entry.error = (exc.stage, exc.reason)
            except Exception as exc:
                entry.error = ("decode", f"{type(exc).__name__}: {exc}")
        return entry

    def _submit_window(
        self, window: list[_Entry], batches: _RunningBatches, writer: TarWriter
    ) -> None:
        """Plan a window's clips into length-sorted batches and start them on the streams
        (each as soon as one is free); returns once the last is running, so the next
        window is gathered while the model works. Samples without audio are written now;
        the writer puts everything back in sample order."""
        good = [e for e in window if e.wav is not None]
        for entry in window:
            if entry.wav is None:
                self._write(entry, writer)
        if not good:
            return
        for batch in self.tokenizer.plan_batches([len(e.wav) for e in good]):
            batches.submit([good[i] for i in batch])

    # ------------------------------------------------------------------ isolation mode

    def _run_isolated(self, tar_path: Path, writer: TarWriter) -> None:
        """One sample at a time, journalled: a sample that was begun by a worker that
        died before finishing it is the poison; it gets an error record, the rest tokens."""
        with IsolationJournal.open(self.opts.output_dir, self.opts.input_dir, tar_path) as journal:
            if self._lease.retry_crashed and journal.crashed:
                log.info("retrying %s: the last attempt was killed on purpose", journal.crashed)
                journal.crashed.clear()
            log.info(
                "isolated run of %s: %d samples journalled, died in %s",
                tar_path,
                len(journal.completed),
                sorted(journal.crashed.values()),
            )
            for item in iter_samples(tar_path, self.opts.audio_exts):
                if isinstance(item, TarDamage):
                    self._tar_error(writer, item.reason)
                    continue
                decided = journal.outcome(item.index, item.key)
                entry = _Entry(item.index, item.key, item)
                if decided is not None:
                    # Finished by an earlier attempt, or the sample that attempt died in.
                    entry.record = decided.record
                    if decided.is_error:
                        entry.error = (decided.stage or "", decided.reason or "")
                    self._write(entry, writer)
                    continue
                self._checkpoint()
                journal.begin(item.index, item.key)
                future: Future | None = None
                if item.problem is None and item.audio is not None:
                    future = Future()
                    try:
                        future.set_result(self._decode(item.audio))
                    except Exception as exc:
                        future.set_exception(exc)
                entry = self._resolve(item, future)
                if entry.wav is not None:
                    self._tokenize([entry])
                if entry.record is not None:
                    journal.done(item.index, entry.record)
                else:
                    stage, reason = entry.error or ("tokenize", "no result")
                    journal.done_error(item.index, item.key, stage, reason)
                self._write(entry, writer)
        self._journal_to_remove = journal

    # ------------------------------------------------------------------ shared steps

    def _tokenize(self, entries: list[_Entry]) -> None:
        self._checkpoint()
        self.faults.before_batch(e.key for e in entries)
        started = time.monotonic()
        results = self.tokenizer.tokenize_many([e.wav for e in entries])
        elapsed = time.monotonic() - started
        self._record(entries, results, elapsed, elapsed)

    def _record(
        self,
        entries: list[_Entry],
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
                entry.error = (
                    getattr(result, "stage", "tokenize"),
                    getattr(result, "reason", None) or str(result),
                )
        self.faults.after_batch(len(entries))
        self._batches += 1
        self._model_s += busy
        self._last_batch_ms = latency * 1000.0
        self._last_batch_size = len(entries)
        self._progress()

    def _write(self, entry: _Entry, writer: TarWriter) -> None:
        self._done += 1
        if entry.record is not None:
            writer.add(entry.index, entry.record)
            if entry.wav is not None:
                self._audio += len(entry.wav) / SAMPLE_RATE
        else:
            stage, reason = entry.error or ("tokenize", "no result")
            self._errors += 1
            writer.add_error(entry.index, entry.key, stage, reason)
            self.channel.send(
                m.SampleError(self._lease.lease_id, self._lease.tar_path, entry.key, stage, reason)
            )
        entry.wav = None
        self._progress()

    def _tar_error(self, writer: TarWriter, reason: str) -> None:
        self._errors += 1
        writer.add_error(None, None, "tar", reason)
        self.channel.send(
            m.SampleError(self._lease.lease_id, self._lease.tar_path, None, "tar", reason)
        )

    def _checkpoint(self) -> None:
        """Between batches: honour abort, cleanup and pause."""
        control = self.control
        if control.abort.is_set():
            raise LeaseAborted
        if control.cleanup.is_set():
            self.cleanup()
        if control.paused.is_set():
            self._progress(force=True)
            self.channel.send(m.StateChanged("paused"))
            while control.paused.is_set() and not control.abort.is_set():
                control.wait_change(0.5)
            if control.abort.is_set():
                raise LeaseAborted
            self.channel.send(m.StateChanged("running"))

    def _progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        if now - self._last_resources >= RESOURCES_EVERY_S:
            self._last_resources = now
            self.channel.send(gpu_resources(self.opts.device))
        self.channel.send(
            m.Progress(
                lease_id=self._lease.lease_id,
                samples_done=self._done,
                errors=self._errors,
                audio_seconds=self._audio,
                batches=self._batches,
                model_seconds=self._model_s,
                last_batch_ms=self._last_batch_ms,
                last_batch_size=self._last_batch_size,
                samples_expected=self._expected,
            )
        )

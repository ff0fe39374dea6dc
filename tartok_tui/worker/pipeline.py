"""One lease: stream a tar, decode ahead of the model, batch by length, tokenize, write.

Samples flow through three stages. A reader thread (feed.TarReader) walks the tar and
hands each sample's audio to a decode pool, queueing (sample, future) pairs in a bounded
queue so decoding runs ahead of the model without holding the whole tar in memory. The
lease thread gathers a window of decoded samples, lets the tokenizer plan length-sorted
batches inside it and submits them (batches.RunningBatches): one per stream on the CPU;
on a GPU one more than the streams, so that the next batch is packed on the host while
the current one runs. There is no barrier between windows: a device that would idle takes
the clips decoded so far, and on a GPU a free submission slot takes a window as soon as it
holds a full batch (its short remainder waits for the next window, once at most). Pause,
abort and cleanup requests take effect between batches. Batches are written as they end;
the TarWriter puts the results back in the tar's sample order.

A lost device (DeviceFailure) is never written down: the lease is dropped uncommitted and
the error propagates, so the process exits and a fresh one takes the tar. A clip out of
memory even alone (ClipOutOfMemory) is the same: the lease is given back as "oom" and the
process exits. A tar in which too many clips got model errors is failed, not committed
(lease.TooManyModelErrors).

Inputs and outputs may be on object storage. A tar URL is streamed (failed reads retried
from the offset reached, each retry a line in the worker log); an input that stays
unreadable fails the lease uncommitted (kind "input"), never as damage. An output URL gets
its files built in a local spool folder and uploaded whole at commit (output.spool); a
store that stays unreachable fails the lease uncommitted (kind "store"). The header scan
that counts a tar's samples alongside is skipped for a URL: it would read the whole object
a second time (the progress bar then shows the supervisor's estimate).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from tartok_tui import messages as m
from tartok_tui.codec.errors import ClipOutOfMemory, DeviceFailure
from tartok_tui.codec.failures import is_accelerator_error
from tartok_tui.codec.tokenizer import BiCodecTokenizer, TokenizeError, Tokens
from tartok_tui.output.journal import JournalEntry
from tartok_tui.output.spool import SpoolTarget, make_spool
from tartok_tui.output.staging import StagingTarget
from tartok_tui.output.store import StoreOutput, StoreUnavailable
from tartok_tui.output.target import OutputTarget
from tartok_tui.output.tarmeta import InputIdentity, input_identity
from tartok_tui.output.writer import OutputUnavailable, TarWriter
from tartok_tui.shards.reader import Sample, TarDamage, Ungrouped, iter_samples, scan_tar
from tartok_tui.stages import Stage
from tartok_tui.storage import (
    Access,
    InputUnavailable,
    Location,
    RetryEvent,
    ThrottleGauge,
    as_location,
    is_url,
    location_name,
    redact_text,
)
from tartok_tui.worker.batches import RunningBatches
from tartok_tui.worker.channel import Channel, Control, gpu_resources
from tartok_tui.worker.faults import Faults
from tartok_tui.worker.feed import END, FLUSH, DecodedFeed, ReaderFailed, TarReader, resolve
from tartok_tui.worker.gpu_share import cap_memory
from tartok_tui.worker.heartbeat import ProgressCounter
from tartok_tui.worker.lease import (
    SAMPLE_RATE,
    Entry,
    LeaseOutput,
    LeaseState,
    TooManyModelErrors,
)
from tartok_tui.worker.options import WorkerOptions

log = logging.getLogger("tartok_tui.worker")

WINDOW_MAX_SAMPLES = 256
WINDOW_BATCHES = 4
"""A window holds about this many model batches of audio, so planning by length
has choice without buffering much (4 x 240 s of 16 kHz float32 is ~60 MB)."""


class Window:
    """Decoded samples waiting to be planned into batches."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.samples = 0
        """16 kHz samples of audio held."""

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        if entry.clip is not None:
            self.samples += len(entry.clip)

    def full(self, max_samples: float) -> bool:
        return len(self.entries) >= WINDOW_MAX_SAMPLES or self.samples >= max_samples

    def take(self) -> list[Entry]:
        entries, self.entries, self.samples = self.entries, [], 0
        return entries


class LeaseAborted(Exception):
    """The supervisor asked to abort (or vanished); nothing of this tar is committed."""


class InputFailure(Exception):
    """The tar could not be read at all (missing, I/O or network error after retries): not
    the tar's fault, so nothing is committed and the tar is tried again."""


class ReaderError(Exception):
    """Reading the tar failed in a way that is neither damage nor an unreadable input (a
    bug, or the host out of memory): nothing is committed and the tar fails for this run,
    rather than being committed cut short."""


class _Regroup(Exception):
    """The tar's members are not grouped by sample: drop what was written, read it indexed."""


class Tokenizer(Protocol):
    """What the pipeline uses of the tokenizer (BiCodecTokenizer; a simulated device in
    benchmarks/bench_feed.py)."""

    streams: int
    batch_seconds: float
    device: Any
    """A torch.device: its ``type`` is "cpu" or the accelerator's."""
    fault_hook: Any
    progress_hook: Any

    def prepare(self, data: bytes, max_seconds: float | None = None) -> Any:
        """Audio bytes -> a prepared clip; ``len(clip)`` is its 16 kHz sample count."""

    def plan_batches(self, lengths: list[int]) -> list[list[int]]: ...

    def submit(self, clips: list[Any]) -> Future[list[Tokens | TokenizeError]]:
        """Start one batch (packed on the calling thread); a future of one result per clip (Tokens or TokenizeError); DeviceFailure from
        the future when the device is gone."""

    def cleanup(self) -> None: ...


def is_device_failure(exc: BaseException) -> bool:
    """A device that can no longer be trusted: nothing of the lease may be committed."""
    return isinstance(exc, DeviceFailure) or is_accelerator_error(exc)


def check_run_fingerprint(opts: WorkerOptions) -> None:
    """The model this worker loads is the one the run's manifest names (a node with other
    weights at the same path, or another snapshot of a repo id, would mix tokens);
    ValueError if not. The weights' digests are cached, so this reads them once per machine."""
    if not opts.fingerprint:
        return
    from tartok_tui.output.manifest import build_manifest

    here = build_manifest(opts.model_dir, opts.precision, opts.audio_exts)
    if here.fingerprint != opts.fingerprint:
        raise ValueError(
            f"the model at {opts.model_dir} gives fingerprint {here.fingerprint}, the run's "
            f"manifest says {opts.fingerprint}: other weights than the run's"
        )


def load_tokenizer(opts: WorkerOptions) -> BiCodecTokenizer:
    import torch

    check_run_fingerprint(opts)
    torch.set_num_threads(opts.threads)
    cap_memory(opts.device, opts.gpu_sharers)
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


class LeaseRunner:
    """Processes leases one after another with one loaded tokenizer."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        opts: WorkerOptions,
        control: Control,
        channel: Channel,
        faults: Faults,
        counter: ProgressCounter,
        gauge: ThrottleGauge | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.opts = opts
        self.control = control
        self.channel = channel
        self.faults = faults
        self.counter = counter
        self.on_gpu = tokenizer.device.type != "cpu"
        tokenizer.progress_hook = faults.wrap_progress(counter.advance)
        hook = faults.model_call_hook()
        if hook is not None:
            tokenizer.fault_hook = hook
        self.pool = ThreadPoolExecutor(
            max_workers=opts.resolved_decode_workers, thread_name_prefix="decode"
        )
        self.access = Access(options=opts.storage_options, on_retry=self._read_retried, gauge=gauge)
        self.local_out = opts.local_output_dir
        """Where partial files live (the spool folder of an output URL)."""
        self.target: SpoolTarget | None = None
        if is_url(opts.output_dir):
            store = StoreOutput(str(opts.output_dir), self.access)
            self.target = SpoolTarget(store, make_spool(self.local_out))

    def _target(self, lease: m.Lease) -> OutputTarget | None:
        """Where the lease's files go: the output URL (uploaded whole), its staged folder
        (committed later by the supervisor, in a batch), or the local output (None)."""
        if lease.stage_to is None or self.target is None:
            return self.target
        return StagingTarget(
            self.target.store, self.target.root, Path(lease.stage_to), self.target.local
        )

    @staticmethod
    def _read_retried(event: RetryEvent) -> None:
        log.warning("%s", event)

    def redact(self, text: str) -> str:
        """``text`` without secrets (storage options, signed URL parameters, tokens)."""
        return redact_text(text, self.opts.storage_options)

    # ------------------------------------------------------------------ per lease

    def run(self, lease: m.Lease) -> None:
        """Process one lease to a committed tar, a TarFailed, or an exception: LeaseAborted,
        a device failure or ClipOutOfMemory (all leave nothing committed)."""
        tar_path = as_location(lease.tar_path)
        state = LeaseState(lease)
        self.faults.on_lease(lease.tar_path)
        state.input = self._identity(tar_path)
        if not is_url(tar_path):
            # Counting reads every member header (a few seconds on a big tar on a slow
            # disk): done alongside, so the model starts at once; progress carries the
            # count when known. Not for a URL: seeking from header to header through
            # read-ahead would fetch nearly the whole object again.
            threading.Thread(
                target=self._count, args=(state, tar_path), name="count", daemon=True
            ).start()
        self.channel.send(m.TarStarted(lease.lease_id, lease.tar_path, None))
        indexed = False
        while True:
            try:
                committed = self._attempt(lease, state, tar_path, indexed)
            except _Regroup as exc:
                # Streaming met a key again after other samples: what it wrote may hold
                # incomplete samples. Start over, reading members grouped by key.
                log.info("%s: %s; reading it again indexed", tar_path, exc)
                name = location_name(tar_path)
                self.channel.send(m.Log("info", self.redact(f"{name}: {exc}; read again by key")))
                indexed = True
                state.restart()
                continue
            if committed is not None:
                self.channel.send(committed)
            return

    def _attempt(
        self, lease: m.Lease, state: LeaseState, tar_path: Location, indexed: bool
    ) -> m.Message | None:
        """One pass over the tar; returns the message that ends the lease (TarDone or
        TarFailed), or raises (LeaseAborted, a device failure, ClipOutOfMemory, _Regroup)."""
        writer: TarWriter | None = None
        try:
            writer = TarWriter(
                self.local_out,
                self.opts.input_dir,
                tar_path,
                lease_id=lease.lease_id,
                output_format=self.opts.output_format,
                target=self._target(lease),
                fingerprint=self.opts.fingerprint or None,
            )
            output = LeaseOutput(
                state, writer, self.channel, self.counter, self.opts.device, self.redact
            )
            if lease.isolate:
                self._run_isolated(tar_path, output)
            else:
                self._run_streaming(tar_path, output, indexed)
            self._checkpoint(output)
            output.check_model_errors(state.done)
            writer.commit(
                expected_samples=state.commit_count(),
                input_keys=state.scan_keys if state.commit_count() is not None else None,
                input_identity=state.input,
            )
            self.counter.advance()
        except (LeaseAborted, DeviceFailure, ClipOutOfMemory, _Regroup):
            if writer is not None:
                writer.abort()
            raise
        except Exception as exc:
            if writer is not None:
                writer.abort()
            if is_device_failure(exc):
                raise
            return self._failure(lease, exc)
        output.progress(force=True)
        return output.done_message()

    def _failure(self, lease: m.Lease, exc: Exception) -> m.TarFailed:
        """The TarFailed for a lease that ended in ``exc``: what kind of failure it is
        decides what the supervisor does with the tar."""
        if isinstance(exc, OutputUnavailable):
            kind, reason = "output", str(exc)
        elif isinstance(exc, (InputFailure, InputUnavailable)):
            kind, reason = "input", str(exc)
        elif isinstance(exc, StoreUnavailable):
            kind, reason = "store", str(exc)
        elif isinstance(exc, TooManyModelErrors):
            kind, reason = "tar", str(exc)
        elif isinstance(exc, ReaderError):
            kind, reason = "tar", f"reading the tar failed: {exc}"
        else:
            log.exception("tar %s failed", lease.tar_path)
            kind, reason = "tar", f"{type(exc).__name__}: {exc}"
        reason = self.redact(reason)
        log.error("tar %s failed (%s): %s", lease.tar_path, kind, reason)
        return m.TarFailed(lease.lease_id, lease.tar_path, reason, kind=kind)

    def _samples(
        self, tar_path: Location, indexed: bool = False
    ) -> Iterator[Sample | TarDamage | Ungrouped]:
        """The tar's samples as the options bound them."""
        return iter_samples(
            tar_path,
            self.opts.audio_exts,
            indexed=indexed,
            max_json_bytes=int(self.opts.max_json_mib * 2**20),
            max_audio_bytes=int(self.opts.max_audio_mib * 2**20),
            access=self.access,
            spool_dir=self._input_spool(),
        )

    def _input_spool(self) -> str | None:
        """Where a compressed tar read by key is decompressed: --spool-dir if given, else
        the system temp dir."""
        if not self.opts.spool_dir:
            return None
        return str(make_spool(Path(self.opts.spool_dir) / "input"))

    def _identity(self, tar_path: Location) -> InputIdentity | None:
        """The input's size and ETag or mtime, for the commit record (``verify`` checks the
        input is still the same from a listing). Not knowing it costs only that check."""
        try:
            return input_identity(tar_path, self.access)
        except Exception as exc:
            log.warning("could not stat %s: %s", location_name(tar_path), self.redact(str(exc)))
            return None

    @staticmethod
    def _count(state: LeaseState, tar_path: Location) -> None:
        try:
            scan = scan_tar(tar_path)
        except Exception as exc:
            # Counting is for the progress bar and the commit check; the reader reports
            # what is wrong with the tar.
            log.warning("could not count samples of %s: %s", tar_path, exc)
            return
        state.scan_keys = scan.keys
        state.scan = (scan.count, scan.damage is None)

    def cleanup(self) -> None:
        self.control.cleanup.clear()
        self.tokenizer.cleanup()
        self.channel.send(gpu_resources(self.opts.device))

    def _decode(self, data: bytes) -> Any:
        return self.tokenizer.prepare(data, max_seconds=self.opts.max_duration)

    # ------------------------------------------------------------------ streaming mode

    def _batches(self, output: LeaseOutput) -> RunningBatches:
        streams = self.tokenizer.streams
        batches: RunningBatches

        def before_submit(entries: list[Entry]) -> None:
            # A pause or a cleanup first lets the running batches end, so "paused" means
            # no batch running and cleanup frees the most.
            if self.control.paused.is_set() or self.control.cleanup.is_set():
                batches.drain()
            self._checkpoint(output)
            self.faults.before_batch(e.key for e in entries)

        def on_done(
            entries: list[Entry], results: list[Tokens | TokenizeError], latency: float, busy: float
        ) -> None:
            output.batch_done(entries, results, latency, busy)
            self.faults.after_batch(len(entries))
            for entry in entries:
                output.write(entry)

        batches = RunningBatches(
            self.tokenizer.submit,
            streams,
            streams + 1 if self.on_gpu else streams,
            before_submit,
            on_done,
        )
        return batches

    def _run_streaming(self, tar_path: Location, output: LeaseOutput, indexed: bool) -> None:
        decoders = self.opts.resolved_decode_workers
        # Deep enough that decoding goes on while the lease thread waits for a free slot
        # (on a GPU: a whole window, so a batch is never short of decoded clips); bounded
        # so a tar of long clips cannot fill memory.
        depth = WINDOW_MAX_SAMPLES if self.on_gpu else max(16, 8 * decoders)
        reader = TarReader(
            tar_path,
            lambda path: self._samples(path, indexed),
            self._decode,
            self.pool,
            self.counter,
            depth,
        ).start()
        batches = self._batches(output)
        batch_samples = self.tokenizer.batch_seconds * SAMPLE_RATE
        feed = DecodedFeed(reader.items, batches, batch_samples if self.on_gpu else 1)
        window = Window()
        damaged = device_failed = False
        try:
            while True:
                item = feed.next(window.samples)
                if item is END:
                    break
                if isinstance(item, ReaderFailed):
                    raise (InputFailure if item.unreadable else ReaderError)(item.reason)
                if isinstance(item, Ungrouped):
                    raise _Regroup(item.reason)
                if item is FLUSH:
                    # The device would idle, or can take a full batch ahead: hand it what
                    # is decoded rather than wait for a full window.
                    self._dispatch(window, batches, output, final=False)
                elif isinstance(item, TarDamage):
                    self._dispatch(window, batches, output, final=True)
                    damaged = True
                    output.tar_error(item.reason)
                else:
                    window.add(resolve(*item))
                    if window.full(WINDOW_BATCHES * batch_samples):
                        self._dispatch(window, batches, output, final=False)
            self._dispatch(window, batches, output, final=True)
            batches.drain()
            output.state.read_clean = not damaged
        except BaseException as exc:
            device_failed = is_device_failure(exc)
            raise
        finally:
            # Aborted or failed: what is running cannot be interrupted; let it end before
            # the lease is given up, so no stream is still busy with a dropped tar. A lost
            # device may never end its calls: the process exits instead.
            batches.abandon(wait_running=not device_failed)
            reader.stop()

    def _dispatch(
        self, window: Window, batches: RunningBatches, output: LeaseOutput, final: bool
    ) -> None:
        """Plan the window's clips into length-sorted batches and submit them, each as soon
        as a slot is free. Samples without audio are written now; the writer puts
        everything back in sample order.

        On a GPU the plan's last batch, the short remainder, goes back to the window to be
        planned with the next clips (a full batch fills the device better), unless this is
        the end, the device would idle, or it holds a clip that was already held back once
        (so no clip waits longer than two windows)."""
        good: list[Entry] = []
        for entry in window.take():
            if entry.clip is None:
                output.write(entry)
            else:
                good.append(entry)
        if not good:
            return
        plan = [
            [good[i] for i in b] for b in self.tokenizer.plan_batches([len(e.clip) for e in good])
        ]
        *full, rest = plan
        for batch in full:
            batches.submit(batch)
        if final or not self.on_gpu or batches.idle() or any(e.held_back for e in rest):
            batches.submit(rest)
            return
        for entry in rest:
            entry.held_back = True
            window.add(entry)

    # ------------------------------------------------------------------ isolation mode

    def _run_isolated(self, tar_path: Location, output: LeaseOutput) -> None:
        """One sample at a time, each begun and finished with a message to the supervisor,
        which journals them: a sample a worker died in is the poison. Samples the lease
        says are decided (by earlier leases, on any worker) are written as they are."""
        state = output.state
        lease_id = state.lease.lease_id
        decided = {e.index: e for e in map(JournalEntry.from_line, state.lease.decided)}
        log.info(
            "isolated run of %s: %d samples decided earlier, died in %s",
            tar_path,
            len(decided),
            sorted(e.key for e in decided.values() if e.stage == Stage.WORKER_CRASH),
        )
        # The journal's sample numbers must mean the same samples in every attempt: an
        # ungrouped tar is read by key from the start (a header scan says which it is).
        indexed = not scan_tar(tar_path, access=self.access).grouped
        damaged = False
        for item in self._samples(tar_path, indexed):
            self.counter.advance()
            if isinstance(item, Ungrouped):
                raise InputFailure(f"{item.reason} (the header scan said it was grouped)")
            if isinstance(item, TarDamage):
                damaged = True
                output.tar_error(item.reason)
                continue
            then = decided.get(item.index)
            if then is not None:
                then.check_key(item.key)
                entry = Entry(item.index, item.key, item, record=then.record)
                if then.is_error:
                    entry.error = (then.stage or "", then.reason or "")
                output.write(entry)
                continue
            self._checkpoint(output)
            self.channel.send(m.IsolationBegin(lease_id, item.index, item.key))
            entry = self._isolated_sample(item, output)
            # The supervisor has the outcome before it is written here: a worker that
            # dies from now on did not die in this sample.
            done = m.IsolationDone(lease_id, item.index, item.key, entry.record)
            if entry.record is None:
                stage, reason = entry.error or ("tokenize", "no result")
                done = replace(done, stage=stage, reason=self.redact(reason))
            self.channel.send(done)
            output.write(entry)
        state.read_clean = not damaged

    def _isolated_sample(self, sample: Sample, output: LeaseOutput) -> Entry:
        """Decode and tokenize one sample on this thread; its Entry has a record or error."""
        future: Future | None = None
        if sample.problem is None and sample.audio is not None:
            future = Future()
            try:
                future.set_result(self._decode(sample.audio))
            except Exception as exc:
                future.set_exception(exc)
            self.counter.advance()
        entry = resolve(sample, future)
        if entry.clip is None:
            return entry
        self.faults.before_batch([entry.key])
        started = time.monotonic()
        results = self.tokenizer.submit([entry.clip]).result()
        elapsed = time.monotonic() - started
        output.batch_done([entry], results, elapsed, elapsed)
        self.faults.after_batch(1)
        return entry

    # ------------------------------------------------------------------ between batches

    def _checkpoint(self, output: LeaseOutput) -> None:
        """Between batches: honour abort, cleanup and pause."""
        control = self.control
        if control.abort.is_set():
            raise LeaseAborted
        if control.cleanup.is_set():
            self.cleanup()
        if control.paused.is_set():
            output.progress(force=True)
            self.channel.send(m.StateChanged("paused"))
            while control.paused.is_set() and not control.abort.is_set():
                control.wait_change(0.5)
            if control.abort.is_set():
                raise LeaseAborted
            self.channel.send(m.StateChanged("running"))

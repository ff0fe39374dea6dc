"""The input side of a lease: a reader thread walks the tar and starts each clip's decode.

The reader queues (sample, decode future) pairs in tar order in a bounded queue, so
decoding runs ahead of the model without holding the whole tar in memory. ``DecodedFeed``
hands them to the lease thread once decoded, and meanwhile collects batches that end and
says when the device should be given what is decoded so far.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tartok_tui.audio import AudioError
from tartok_tui.shards.reader import Sample, TarDamage, Ungrouped
from tartok_tui.stages import Stage
from tartok_tui.worker.batches import RunningBatches
from tartok_tui.worker.heartbeat import ProgressCounter
from tartok_tui.worker.lease import Entry

log = logging.getLogger("tartok_tui.worker")


@dataclass
class ReaderFailed:
    """The reader stopped with an error that is neither damage (a TarDamage) nor a
    sample's problem. Never an error record: the lease fails, nothing is committed."""

    reason: str
    unreadable: bool = False
    """The file could not be opened or read at all (maybe transient: the tar is tried
    again); otherwise the reader itself failed (the tar fails for this run)."""


END = object()
"""The reader met the end of the tar (after a TarDamage, if any)."""
FLUSH = object()
"""From DecodedFeed.next(): give the device what the window holds now."""


def resolve(sample: Sample, future: Future | None) -> Entry:
    """A sample and its decode's outcome as an Entry: a clip, or the error it gets."""
    entry = Entry(sample.index, sample.key, sample)
    if sample.problem is not None:
        entry.error = (Stage.SAMPLE, sample.problem)
    elif future is None:
        entry.error = (Stage.SAMPLE, "no audio")
    else:
        try:
            entry.clip = future.result()
        except AudioError as exc:
            entry.error = (exc.stage, exc.reason)
        except MemoryError:
            raise  # the host's, not the clip's
        except Exception as exc:
            entry.error = ("decode", f"{type(exc).__name__}: {exc}")
    return entry


class TarReader:
    """A thread that walks one tar and starts a decode for every clip on `pool`."""

    def __init__(
        self,
        tar_path: Path | str,
        read: Callable[[Path | str], Iterator[Sample | TarDamage | Ungrouped]],
        decode: Callable[[bytes], Any],
        pool: Executor,
        counter: ProgressCounter,
        depth: int,
    ) -> None:
        self.tar_path = tar_path
        self.read = read
        self.decode = decode
        self.pool = pool
        self.counter = counter
        self.items: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="tar-reader", daemon=True)

    def start(self) -> TarReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading and wait for the thread to end (it may be blocked on a full queue)."""
        self._stop.set()
        while self._thread.is_alive() or not self.items.empty():
            with contextlib.suppress(queue.Empty):
                item = self.items.get(timeout=0.05)
                if isinstance(item, tuple) and item[1] is not None:
                    item[1].cancel()  # a decode nobody will read: skip it if not started

    def _decode_counted(self, data: bytes) -> Any:
        try:
            return self.decode(data)
        finally:
            self.counter.advance()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        try:
            for item in self.read(self.tar_path):
                self.counter.advance()
                if isinstance(item, (TarDamage, Ungrouped)):
                    if not self._put(item):
                        return
                    continue
                future = None
                if item.problem is None and item.audio is not None:
                    future = self.pool.submit(self._decode_counted, item.audio)
                    item.audio = None  # the bytes live on in the decode task only
                if not self._put((item, future)):
                    return
        except OSError as exc:
            # iter_samples reports damage as TarDamage; an OSError is the file itself
            # (missing, unreadable, I/O error): maybe transient, so not the tar's fault.
            log.exception("cannot read %s", self.tar_path)
            if not self._put(ReaderFailed(f"{type(exc).__name__}: {exc}", unreadable=True)):
                return
        except Exception as exc:
            # Not damage (iter_samples yields that) and not one sample's problem (a sample
            # carries that): a record here would commit the tar cut short at this point.
            log.exception("reading %s failed", self.tar_path)
            if not self._put(ReaderFailed(f"{type(exc).__name__}: {exc}")):
                return
        self._put(END)


class DecodedFeed:
    """The reader's items in tar order, each once decoded; while waiting for the next one
    it collects batches that end and returns FLUSH when the device should take the window.

    The device should take the window when a stream would otherwise idle (it holds
    anything), or when a submission slot is free and the window holds a full batch: then
    a fast device is kept one batch ahead instead of waiting for a whole window.
    """

    POLL_S = 0.01
    """How often to look for a batch that ended while the reader's queue is empty
    (input slower than the model; the queue has no way to wake us)."""

    def __init__(
        self, items: queue.Queue, batches: RunningBatches, full_batch_samples: float
    ) -> None:
        self.items = items
        self.batches = batches
        self.full_batch_samples = full_batch_samples
        self._head: Any = None
        """The item taken from the queue and not yet returned (items are never None)."""

    def _flush_now(self, window_samples: int) -> bool:
        if window_samples <= 0:
            return False
        batches = self.batches
        return batches.idle() or (batches.free() and window_samples >= self.full_batch_samples)

    def next(self, window_samples: int) -> Any:
        """The next item once it is decoded, or FLUSH (see the class doc); `window_samples`:
        the 16 kHz samples of audio the lease's window holds."""
        batches = self.batches
        while True:
            batches.collect(block=False)
            if self._head is None:
                try:
                    self._head = self.items.get_nowait()
                except queue.Empty:
                    if self._flush_now(window_samples):
                        return FLUSH
                    try:
                        self._head = self.items.get(
                            timeout=self.POLL_S if batches.running else None
                        )
                    except queue.Empty:
                        continue
            future = self._head[1] if isinstance(self._head, tuple) else None
            if future is None or future.done():
                item, self._head = self._head, None
                return item
            if self._flush_now(window_samples):
                return FLUSH
            # Wake when the clip is decoded or a batch ends, whichever comes first.
            wait([future, *batches.running], return_when=FIRST_COMPLETED)

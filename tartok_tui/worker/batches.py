"""Batches in flight on the tokenizer, each handed back as soon as it ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from tartok_tui.codec.tokenizer import TokenizeError, Tokens
from tartok_tui.worker.lease import Entry

BatchDone = Callable[[list[Entry], list[Tokens | TokenizeError], float, float], None]
"""Called with (entries, results, latency s, model wall s to add) as each batch ends."""


class RunningBatches:
    """Up to `max_in_flight` batches submitted to the tokenizer, `streams` of them running.

    On a GPU (one stream) one more batch than there are streams is submitted, so the next
    batch is packed on the host and queued while the current one runs; on the CPU every
    submitted batch runs at once. A batch's results go to `on_done` as it ends; a device
    failure raised by a batch propagates from `collect`.
    """

    def __init__(
        self,
        submit: Callable[[list[Any]], Future[list[Tokens | TokenizeError]]],
        streams: int,
        max_in_flight: int,
        before_submit: Callable[[list[Entry]], None],
        on_done: BatchDone,
    ) -> None:
        if max_in_flight < streams:
            raise ValueError(f"max_in_flight {max_in_flight} < streams {streams}")
        self._submit = submit
        self.streams = streams
        self.max_in_flight = max_in_flight
        self._before_submit = before_submit
        self._on_done = on_done
        self.running: dict[Future, tuple[list[Entry], float]] = {}
        # Model wall time is counted once however many batches run at once: from the
        # last accounting mark, while at least one batch is running.
        self._mark = 0.0

    def free(self) -> bool:
        """Another batch can be submitted without waiting."""
        return len(self.running) < self.max_in_flight

    def idle(self) -> bool:
        """A stream has no batch to run."""
        return len(self.running) < self.streams

    def submit(self, entries: Sequence[Entry]) -> None:
        """Submit a batch once a slot is free (writing batches that end meanwhile)."""
        batch = list(entries)
        while not self.free():
            self.collect(block=True)
        self._before_submit(batch)
        now = time.monotonic()
        if not self.running:
            self._mark = now
        self.running[self._submit([e.clip for e in batch])] = (batch, now)

    def collect(self, block: bool) -> None:
        """Hand back the batches that have ended (waiting for one if `block`)."""
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
        # In submission order, so the same run hands back its batches in the same order.
        for future in [f for f in self.running if f in done]:
            entries, submitted = self.running.pop(future)
            self._on_done(entries, future.result(), now - submitted, busy)
            busy = 0.0

    def drain(self) -> None:
        while self.running:
            self.collect(block=True)

    def abandon(self, wait_running: bool = True) -> None:
        """Drop the batches in flight (an aborted or failed lease): cancel those not
        started, wait for the others to end unless told not to, write nothing."""
        running, self.running = list(self.running), {}
        for future in running:
            future.cancel()
        if wait_running:
            wait(running)

"""Alive vs progressing: a heartbeat thread that reports a counter only real work advances.

The heartbeat thread sends ``Heartbeat(progress)`` every ``HEARTBEAT_EVERY_S`` whatever
the worker is doing (loading the model, idle, paused, in a batch), so a message of any
kind says the process is alive. The counter moves only when work is done: a sample read
from the tar, a clip decoded, a model stage or batch finished, a record written, a tar
committed. A hung device call or a read that never returns keeps the heartbeat going
with a counter that stands still, which is how the supervisor tells "alive" from
"progressing". Each heartbeat also says whether the worker waits on a throttled store
(``ThrottleGauge``), which the supervisor shows as a state, not counted as a stall.
"""

from __future__ import annotations

import threading

from tartok_tui import messages as m
from tartok_tui.storage import ThrottleGauge
from tartok_tui.worker.channel import Channel

HEARTBEAT_EVERY_S = 2.0


class ProgressCounter:
    """A counter advanced from any thread (reader, decode pool, model streams, lease)."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    def advance(self) -> None:
        with self._lock:
            self._value += 1

    @property
    def value(self) -> int:
        return self._value


class Heartbeat:
    """Sends the counter (and the throttled wait, if any) every `every_s` seconds from a
    daemon thread of its own."""

    def __init__(
        self,
        channel: Channel,
        counter: ProgressCounter,
        every_s: float = HEARTBEAT_EVERY_S,
        gauge: ThrottleGauge | None = None,
    ) -> None:
        self.channel = channel
        self.counter = counter
        self.every_s = every_s
        self.gauge = gauge
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        while True:
            throttled = self.gauge.state() if self.gauge is not None else None
            what, retry_in = throttled if throttled is not None else (None, None)
            self.channel.send(m.Heartbeat(self.counter.value, what, retry_in))
            if self._stop.wait(self.every_s):
                return

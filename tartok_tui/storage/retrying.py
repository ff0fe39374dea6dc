"""How a failed call to a store is retried: two declared policies, one streak at a time.

- **Network** (``RetryPolicy``): connection reset or refused, timeouts, 5xx other than
  503: a few tries with exponential backoff (default 8 tries within about 50 s), then
  the caller's "unavailable" error.
- **Throttling** (``ThrottlePolicy``): 429, 503, ``SlowDown``-like codes. The store is
  fine and asks us to come back later; bursts last longer than botocore's own retries
  (about 5 tries within a few seconds), so we wait on top of them: exponential from 1 s,
  capped at 60 s, honouring ``Retry-After``, for up to 15 minutes in a row before giving
  up like a network failure.

``Retrier`` keeps one call's streak (reset by a success) and reports each retry
(``Access.on_retry``) and each throttled wait to a ``ThrottleGauge``, which the worker's
heartbeat reads to show the state ("throttled, retry in 40 s").
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tartok_tui.storage.errors import Fault, FaultKind


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call failing for a network reason is retried
    (defaults: 8 tries, ~50 s)."""

    tries: int = 8
    first_delay_s: float = 0.5
    max_delay_s: float = 20.0

    def delay(self, failure: int) -> float:
        """Seconds to wait after the ``failure``-th failure in a row (jittered, so that many
        workers hit by one outage do not come back at the same instant)."""
        base = min(self.max_delay_s, self.first_delay_s * 2 ** (failure - 1))
        return base * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class ThrottlePolicy:
    """How long a throttled call waits: from ``first_delay_s``, doubling to ``max_delay_s``,
    at least what ``Retry-After`` asks, for at most ``patience_s`` in a row."""

    first_delay_s: float = 1.0
    max_delay_s: float = 60.0
    patience_s: float = 900.0

    def delay(self, throttle: int, retry_after_s: float | None) -> float:
        base = min(self.max_delay_s, self.first_delay_s * 2 ** (throttle - 1))
        jittered = base * random.uniform(0.5, 1.0)
        return max(jittered, retry_after_s or 0.0)


@dataclass(frozen=True)
class RetryEvent:
    """A failed call about to be retried (secrets already removed)."""

    url: str
    """The object (or prefix) called, redacted."""
    offset: int
    """For reads: the byte the read was at (0 otherwise)."""
    failure: int
    """Failures in a row of this kind (network failures, or throttled answers)."""
    tries: int
    """The network policy's tries (for throttling: 0, patience is in seconds)."""
    error: str
    delay_s: float
    action: str = "reading"
    throttled: bool = False
    waited_s: float = 0.0
    """Throttled only: seconds this call has been throttled so far."""
    patience_s: float = 0.0

    @property
    def where(self) -> str:
        at = f" at byte {self.offset}" if self.action == "reading" else ""
        return f"{self.action} {self.url}{at}"

    def __str__(self) -> str:
        if self.throttled:
            return (
                f"{self.where}: the store is throttling ({self.error}); retry in "
                f"{self.delay_s:.1f} s (throttled for {self.waited_s:.0f} s, waiting up to "
                f"{self.patience_s:.0f} s)"
            )
        return (
            f"{self.where} failed ({self.error}); "
            f"retry {self.failure}/{self.tries - 1} in {self.delay_s:.1f} s"
        )


class ThrottleGauge:
    """Calls of this process now waiting on a throttled store (any thread).

    An *episode* lasts from the first throttled answer any call gets until no call is
    throttled any more; ``on_episode(what)`` is called when one starts (one line per
    episode in the event log, however many retries it takes)."""

    def __init__(self, on_episode: Callable[[str], None] | None = None) -> None:
        self.on_episode = on_episode
        self._lock = threading.Lock()
        self._calls: dict[int, tuple[float, str, float]] = {}
        """call id -> (when its throttling began, what it is, monotonic time of its retry)"""

    def waiting(self, call: int, what: str, retry_at: float, since: float) -> None:
        """``call`` (throttled since ``since``) waits until ``retry_at``."""
        with self._lock:
            first = not self._calls
            self._calls[call] = (since, what, retry_at)
        if first and self.on_episode is not None:
            self.on_episode(what)

    def done(self, call: int) -> None:
        with self._lock:
            self._calls.pop(call, None)

    def state(self, now: float | None = None) -> tuple[str, float | None] | None:
        """(what the longest-throttled call is, seconds until its retry, None while the retry
        is under way), or None when nothing is throttled."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if not self._calls:
                return None
            _, what, retry_at = min(self._calls.values())
        return what, (retry_at - now if retry_at > now else None)


_call_ids = itertools.count(1)


class Retrier:
    """One call's streak of failures: ``retry(fault, ...)`` sleeps and returns True, or
    returns False when the policy for that kind of failure is spent; ``succeeded()``
    ends the streak. Only TRANSIENT and THROTTLED faults are ever retried."""

    def __init__(
        self,
        retry: RetryPolicy,
        throttle: ThrottlePolicy,
        on_retry: Callable[[RetryEvent], None],
        gauge: ThrottleGauge | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retry_policy = retry
        self.throttle_policy = throttle
        self.on_retry = on_retry
        self.gauge = gauge
        self.sleep = sleep
        self.clock = clock
        self.failures = 0
        self.throttles = 0
        self.throttled_since: float | None = None
        self._id = next(_call_ids)

    def retry(self, fault: Fault, url: str, action: str, error: str, offset: int = 0) -> bool:
        """After a failed try: wait and return True, or return False (give up)."""
        if fault.kind == FaultKind.THROTTLED:
            return self._throttled(fault, url, action, offset)
        if fault.kind != FaultKind.TRANSIENT:
            self._end()
            return False
        self.failures += 1
        policy = self.retry_policy
        if self.failures >= policy.tries:
            self._end()
            return False
        delay = policy.delay(self.failures)
        self.on_retry(RetryEvent(url, offset, self.failures, policy.tries, error, delay, action))
        self.sleep(delay)
        return True

    def _throttled(self, fault: Fault, url: str, action: str, offset: int) -> bool:
        now = self.clock()
        if self.throttled_since is None:
            self.throttled_since = now
        waited = now - self.throttled_since
        policy = self.throttle_policy
        if waited >= policy.patience_s:
            self._end()
            return False
        self.throttles += 1
        delay = min(policy.delay(self.throttles, fault.retry_after_s), policy.patience_s - waited)
        event = RetryEvent(
            url,
            offset,
            self.throttles,
            0,
            fault.said,
            delay,
            action,
            True,
            waited,
            policy.patience_s,
        )
        if self.gauge is not None:
            what = f"{fault.said} {event.where}"
            self.gauge.waiting(self._id, what, now + delay, self.throttled_since)
        self.on_retry(event)
        self.sleep(delay)
        return True

    def succeeded(self) -> None:
        self.failures = self.throttles = 0
        self.throttled_since = None
        self._end()

    def _end(self) -> None:
        if self.gauge is not None:
            self.gauge.done(self._id)

    def spent(self, fault: Fault) -> str:
        """What was tried before giving up on ``fault``, for its message: `` after 8 tries``,
        `` after 900 s throttled``, or nothing (a fault no retry mends)."""
        if fault.kind == FaultKind.THROTTLED and self.throttled_since is not None:
            return f" after {self.clock() - self.throttled_since:.0f} s throttled"
        if fault.kind == FaultKind.TRANSIENT:
            return f" after {self.failures} tries"
        return ""

"""Restart policy for one slot: exponential backoff and crash-loop detection."""

from __future__ import annotations

from collections import deque


class RestartPolicy:
    """Decides how long a slot waits before its next start, and when it gives up.

    A slot is in a crash loop when it failed ``limit`` times within ``window_s``.
    The backoff doubles with each failure since the slot last finished a tar.
    """

    def __init__(self, initial_s: float, max_s: float, window_s: float, limit: int) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.window_s = window_s
        self.limit = limit
        self._failures: deque[float] = deque()
        self._consecutive = 0

    def record_failure(self, now: float) -> None:
        self._failures.append(now)
        self._consecutive += 1
        self._forget_before(now - self.window_s)

    def record_success(self) -> None:
        """The slot made progress (committed a tar): the next failure starts a fresh backoff."""
        self._consecutive = 0

    def crash_loop(self, now: float) -> bool:
        self._forget_before(now - self.window_s)
        return len(self._failures) >= self.limit

    def failures_in_window(self, now: float) -> int:
        self._forget_before(now - self.window_s)
        return len(self._failures)

    def next_delay(self) -> float:
        """Seconds to wait before restarting after the latest failure."""
        if self._consecutive == 0:
            return 0.0
        return min(self.max_s, self.initial_s * 2 ** (self._consecutive - 1))

    def _forget_before(self, cutoff: float) -> None:
        while self._failures and self._failures[0] < cutoff:
            self._failures.popleft()

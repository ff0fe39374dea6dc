"""One writer per output: a run claims the tars it writes before any worker starts.

Two runs writing the same tars (two jobs with the same arguments, or a retry while the
first still runs) would tokenize every tar twice, and where their error records differ one
run's ``errors/`` file could be replaced under the other's tokens file. So a run claims its
selection of tars in the output (``OUTPUT/.claims/<selection>.json``: host, pid, run id,
start and heartbeat times), refreshes the claim while it lives, and removes it at its end.

- The claim is created only if absent (atomically: see ``claim_files``, ``claim_objects``).
  Another run's claim on the same tars refuses the run at once (``ClaimRefused``), unless
  that run is gone: it ran on this machine and its process has ended (pid and start time:
  a reused pid is not the holder), or its heartbeat is older than the store's
  ``stale_after_s``. A gone run's claim, or any claim with ``--take-over``, is taken over by
  a replace conditional on the claim as read: of two runs taking over at once one wins.
- Runs over different ranges share an output as before; a claim of another range that
  overlaps this one's tars refuses the run the same way (two runs starting at the same
  moment over overlapping ranges may both be refused: neither writes).
- A holder whose heartbeat finds the claim changed has lost it (``ClaimLost``): the run
  stops leasing and returns its tars uncommitted.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tartok_tui.output.claim_files import CLAIM_SUFFIX, ClaimStore, Found, LocalClaims
from tartok_tui.output.owner import Owner
from tartok_tui.storage import Access, Location, is_url

BROKEN_GRACE_S = 5.0
"""A local claim is created empty, then written: an unreadable one younger than this is
being written; an older one (or an unreadable object, always whole) belongs to nobody."""
ATTEMPTS = 20
"""Lost races before a run gives up claiming (each means the claim changed meanwhile)."""
TAKE_OVER_HINT = "--take-over (TARTOK_TAKE_OVER=1)"


def _seconds(seconds: float) -> str:
    return f"{seconds:.0f} s"


class ClaimRefused(Exception):
    """Another run holds (part of) the tars of this run in the output."""


class ClaimLost(Exception):
    """This run's claim was taken over or removed: it must write no more."""


@dataclass(frozen=True)
class Selection:
    """The tars a run writes: a range of the sorted tar list of one input."""

    input: str
    recursive: bool
    first: int
    end: int

    @property
    def name(self) -> str:
        """The claim's name: runs over the same tars compete for the same claim."""
        text = json.dumps([self.input, self.recursive, self.first, self.end])
        return hashlib.sha256(text.encode()).hexdigest()[:16] + CLAIM_SUFFIX

    def overlaps(self, other: Selection) -> bool:
        if self.input != other.input:
            return False
        if self.recursive != other.recursive:
            return True  # indices of different lists: assume the worst
        return self.first < other.end and other.first < self.end

    def describe(self) -> str:
        sub = ", with subdirectories" if self.recursive else ""
        return f"tars [{self.first}, {self.end}) of {self.input}{sub}"


@dataclass(frozen=True)
class Holder:
    """What a claim says: which run holds it, over which tars, alive when."""

    run_id: str
    owner: Owner
    selection: Selection
    claimed_at: float
    heartbeat_at: float

    @classmethod
    def new(cls, selection: Selection) -> Holder:
        now = time.time()
        return cls(uuid.uuid4().hex[:12], Owner.me(), selection, now, now)

    def encode(self) -> bytes:
        record = {
            "tool": "tartok-tui",
            "run_id": self.run_id,
            **self.owner.to_dict(),
            "selection": vars(self.selection),
            "claimed_at": self.claimed_at,
            "heartbeat_at": self.heartbeat_at,
        }
        return (json.dumps(record, indent=1) + "\n").encode()

    @classmethod
    def decode(cls, data: bytes) -> Holder:
        """ValueError when ``data`` is not a claim."""
        try:
            record: dict[str, Any] = json.loads(data)
            tars = record["selection"]
            return cls(
                run_id=str(record["run_id"]),
                owner=Owner.from_dict(record),
                selection=Selection(
                    str(tars["input"]),
                    bool(tars["recursive"]),
                    int(tars["first"]),
                    int(tars["end"]),
                ),
                claimed_at=float(record["claimed_at"]),
                heartbeat_at=float(record["heartbeat_at"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a claim: {exc!r}") from exc

    def heartbeat_age(self, now: float) -> float:
        return max(now - self.heartbeat_at, 0.0)

    def describe(self, now: float) -> str:
        return (
            f"run {self.run_id} on host {self.owner.host} (pid {self.owner.pid}), "
            f"{self.selection.describe()}, last heartbeat {_seconds(self.heartbeat_age(now))} ago"
        )


def gone_reason(holder: Holder, now: float, stale_after_s: float) -> str | None:
    """Why ``holder`` is a run that is gone, or None while it may be alive."""
    if holder.owner.process_gone():
        return f"its process (pid {holder.owner.pid} on this machine) has ended"
    silent = holder.heartbeat_age(now)
    if silent > stale_after_s:
        return (
            f"its last heartbeat is {_seconds(silent)} old (stale after {_seconds(stale_after_s)})"
        )
    return None


@dataclass(frozen=True)
class Verdict:
    """A claim as found: its holder (None: unreadable) and why it is gone (None: alive)."""

    found: Found
    holder: Holder | None
    gone: str | None
    settling: bool = False
    """Unreadable but young: being written, look again."""


def judge(found: Found, stale_after_s: float, now: float | None = None) -> Verdict:
    now = time.time() if now is None else now
    try:
        holder = Holder.decode(found.data)
    except ValueError:
        if found.age_s is not None and found.age_s < BROKEN_GRACE_S:
            return Verdict(found, None, None, settling=True)
        return Verdict(found, None, "its claim file is unreadable")
    return Verdict(found, holder, gone_reason(holder, now, stale_after_s))


def _refusal(store: ClaimStore, holder: Holder | None) -> ClaimRefused:
    who = holder.describe(time.time()) if holder is not None else "an unreadable claim"
    return ClaimRefused(
        f"another run is writing these tars into {store.where}: {who}. Wait for it to end, "
        f"or stop it. A run that is gone is taken over without asking: on the same machine "
        f"once its process has ended, elsewhere once its heartbeat is older than "
        f"{_seconds(store.stale_after_s)}. {TAKE_OVER_HINT} takes over now; the other run "
        "then stops at its next heartbeat."
    )


def _lost_race(races: int) -> int:
    """Wait a little after losing a race (the winner is mid-write: a swap takes an fsync or
    a request), longer each time and at random, so racers do not lose to each other again."""
    time.sleep(random.uniform(0.0, min(0.02 * 2**races, 1.0)))
    return races + 1


def _taken(holder: Holder | None, why: str | None) -> str:
    who = holder.describe(time.time()) if holder is not None else "an unreadable claim"
    return f"took over the claim on these tars from {who}: {why or 'forced by --take-over'}"


class OutputClaim:
    """This run's claim: ``acquire`` it, ``heartbeat`` it every ``heartbeat_s``, ``release``
    it at the end. Heartbeat and release are safe to call from different threads."""

    def __init__(self, store: ClaimStore, me: Holder, token: str, notes: list[str]) -> None:
        self.store = store
        self.me = me
        self.name = me.selection.name
        self._token = token
        self.notes = notes
        """What acquiring did that the run's first lines must say (claims taken over)."""
        self._lock = threading.Lock()
        self._done = False
        self._last_refresh = time.monotonic()

    @property
    def heartbeat_s(self) -> float:
        return self.store.heartbeat_s

    @classmethod
    def acquire(
        cls, store: ClaimStore, selection: Selection, *, take_over: bool = False
    ) -> OutputClaim:
        """Claim ``selection``; ClaimRefused while a live run holds any of its tars."""
        claim = cls._take(store, Holder.new(selection), take_over)
        try:
            claim._clear_overlaps(take_over)
        except BaseException as exc:
            try:
                claim.release()
            except OSError as cleanup:
                # The refusal (or the error) is the news; a claim left behind is taken
                # over by the next run of these tars once this process has ended.
                exc.add_note(f"this run's own claim stays: {cleanup}")
            raise
        return claim

    @classmethod
    def _take(cls, store: ClaimStore, me: Holder, take_over: bool) -> OutputClaim:
        name = me.selection.name
        races = 0
        while races < ATTEMPTS:
            me = replace(me, heartbeat_at=time.time())
            token = store.create(name, me.encode())
            if token is not None:
                return cls(store, me, token, [])
            found = store.read(name)
            if found is None:
                races = _lost_race(races)  # released meanwhile
                continue
            verdict = judge(found, store.stale_after_s)
            if verdict.settling:
                time.sleep(0.1)  # its age grows: at most BROKEN_GRACE_S
                continue
            if verdict.gone is None and not take_over:
                raise _refusal(store, verdict.holder)
            token = store.replace(name, me.encode(), found.token)
            if token is not None:
                return cls(store, me, token, [_taken(verdict.holder, verdict.gone)])
            races = _lost_race(races)
        raise ClaimRefused(f"could not claim {store.where}: its claim kept changing")

    def _clear_overlaps(self, take_over: bool) -> None:
        """Refuse (or, taking over, remove) a live claim of another range over our tars."""
        for name in self.store.names():
            if name == self.name:
                continue
            for _ in range(ATTEMPTS):
                found = self.store.read(name)
                if found is None:
                    break
                verdict = judge(found, self.store.stale_after_s)
                holder = verdict.holder
                if holder is None or verdict.gone is not None:
                    break  # not a live run's (an unreadable one names no tars)
                if not holder.selection.overlaps(self.me.selection):
                    break
                if not take_over:
                    raise _refusal(self.store, holder)
                if self.store.delete(name, found.token):
                    self.notes.append(_taken(holder, None))
                    break

    def heartbeat(self) -> None:
        """Refresh the claim. ClaimLost when it is not ours anymore, or could not be
        refreshed for so long that another run may rightly have taken it over; OSError
        (the store is unreachable) is left to the caller, who tries again later."""
        with self._lock:
            if self._done:
                return
            me = replace(self.me, heartbeat_at=time.time())
            try:
                token = self.store.replace(self.name, me.encode(), self._token)
            except OSError as exc:
                unrefreshed = time.monotonic() - self._last_refresh
                if unrefreshed > self.store.stale_after_s:
                    self._done = True
                    raise ClaimLost(
                        f"the claim on {self.store.where} could not be refreshed for "
                        f"{_seconds(unrefreshed)} ({exc}): another run may have taken it over"
                    ) from exc
                raise
            if token is None:
                self._done = True
                raise ClaimLost(self._lost_to())
            self.me, self._token = me, token
            self._last_refresh = time.monotonic()

    def _lost_to(self) -> str:
        try:
            found = self.store.read(self.name)
        except OSError as exc:
            return f"another run took over the output {self.store.where} (who: unknown, {exc})"
        holder = judge(found, self.store.stale_after_s).holder if found is not None else None
        if holder is None:
            return f"this run's claim on {self.store.where} was removed by another run"
        return (
            f"another run took over the output {self.store.where}: {holder.describe(time.time())}"
        )

    def release(self) -> str | None:
        """Remove the claim if it is still ours; a warning when it was not."""
        with self._lock:
            if self._done:
                return None
            self._done = True
            if self.store.delete(self.name, self._token):
                return None
            return f"the claim on {self.store.where} was not this run's anymore: left as it is"


def claim_store(output_dir: Location, access: Access | None = None) -> ClaimStore:
    """Where ``output_dir``'s claims live."""
    if is_url(output_dir):
        from tartok_tui.output.claim_objects import ObjectClaims

        return ObjectClaims(str(output_dir), access)
    return LocalClaims(Path(output_dir))


@dataclass(frozen=True)
class ClaimStatus:
    """A claim as ``status`` shows it."""

    name: str
    holder: Holder | None
    gone: str | None
    read_at: float

    def describe(self) -> str:
        if self.holder is None:
            return f"{self.name}: {self.gone or 'unreadable'}"
        text = self.holder.describe(self.read_at)
        if self.gone is not None:
            text += f" (gone: {self.gone}; the next run over these tars takes it over)"
        return text

    def to_dict(self) -> dict[str, Any]:
        holder = self.holder
        return {
            "name": self.name,
            "host": holder.owner.host if holder else None,
            "pid": holder.owner.pid if holder else None,
            "run_id": holder.run_id if holder else None,
            "selection": vars(holder.selection) if holder else None,
            "heartbeat_age_s": holder.heartbeat_age(self.read_at) if holder else None,
            "gone": self.gone,
        }


def read_claims(output_dir: Location, access: Access | None = None) -> list[ClaimStatus]:
    """Every claim on ``output_dir`` now, judged from here (never changes one)."""
    store = claim_store(output_dir, access)
    claims = []
    for name in store.names():
        found = store.read(name)
        if found is None:
            continue
        now = time.time()
        verdict = judge(found, store.stale_after_s, now)
        claims.append(ClaimStatus(name, verdict.holder, verdict.gone, now))
    return claims

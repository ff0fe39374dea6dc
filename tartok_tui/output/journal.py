"""The isolation journal: what is decided about the samples of a poison tar, on disk.

A tar that killed workers repeatedly is processed in isolation, one sample at a time, to
find the sample that kills (the rules are ``supervisor.queue``'s). The *supervisor* keeps
its journal: the worker says when it begins a sample and what came of it (the messages
``IsolationBegin`` / ``IsolationDone``), and a sample a worker died in gets a
``worker_crash`` error record. Each decided sample is one line, fsynced, of
``OUTPUT/.partial/journal/<tar>.journal`` on the supervisor's disk (the spool folder of an
output URL)::

    {"done": 7, "record": {...}}                       its line, or
    {"done": 7, "error": {"key", "stage", "reason"}}   its error record

Every later lease of the tar, on any worker on any node, in this run or a later one,
carries these outcomes (``Lease.decided``): the worker writes them as they are instead
of tokenizing those samples again. The journal is removed once the tar is committed.
A torn last line (the supervisor killed mid-write) is ignored; a full disk cuts the
journal back to its last whole line (``OutputUnavailable``). Lines of other kinds (the
``begin`` lines an older worker-written journal holds) decide nothing and are skipped.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tartok_tui.output.target import OutputUnavailable, fsync_dir, output_op
from tartok_tui.stages import Stage

CRASH_STAGE = Stage.WORKER_CRASH
CRASH_REASON = "the worker died while tokenizing this sample"


class JournalError(Exception):
    """A journal line that cannot be read, or a journal of another tar (a key differs)."""


@dataclass(frozen=True)
class JournalEntry:
    """The decided outcome of one sample: its record line, or its error record."""

    index: int
    key: str
    record: dict[str, Any] | None = None
    stage: str | None = None
    reason: str | None = None

    @property
    def is_error(self) -> bool:
        return self.record is None

    @classmethod
    def crash(cls, index: int, key: str) -> JournalEntry:
        """The verdict on the sample a worker died in."""
        return cls(index, key, stage=CRASH_STAGE, reason=CRASH_REASON)

    def to_line(self) -> dict[str, Any]:
        """The entry as a journal line (and as ``Lease.decided`` carries it)."""
        if self.record is not None:
            return {"done": self.index, "record": self.record}
        error = {"key": self.key, "stage": self.stage or "", "reason": self.reason or ""}
        return {"done": self.index, "error": error}

    @classmethod
    def from_line(cls, line: dict[str, Any]) -> JournalEntry:
        """An entry from a journal line; JournalError when it is not one."""
        try:
            index = int(line["done"])
            if "record" in line:
                record = line["record"]
                return cls(index, str(record["key"]), record=record)
            error = line["error"]
            return cls(index, str(error["key"]), stage=error["stage"], reason=error["reason"])
        except (KeyError, TypeError, ValueError) as exc:
            raise JournalError(f"not a decided sample: {str(line)[:200]}") from exc

    def check_key(self, key_now: str) -> None:
        """JournalError when the sample at this index is not the one journalled."""
        if self.key != key_now:
            raise JournalError(
                f"sample {self.index} was {self.key!r} when its isolation journal was "
                f"written and is now {key_now!r}: the tar changed (delete its journal "
                "under .partial/journal to start its isolation afresh)"
            )


def read_journal(path: Path) -> dict[int, JournalEntry]:
    """The decided samples of a journal (none when it does not exist); a torn last line is
    ignored, anything else unreadable is a JournalError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    decided: dict[int, JournalEntry] = {}
    # Everything after the last newline was cut by a kill mid-write.
    whole = data[: data.rfind(b"\n") + 1]
    for number, raw in enumerate(whole.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError as exc:
            raise JournalError(f"{path}: line {number} is not JSON: {exc}") from exc
        if not isinstance(line, dict):
            raise JournalError(f"{path}: line {number} is not an object")
        if "done" not in line:
            continue
        try:
            entry = JournalEntry.from_line(line)
        except JournalError as exc:
            raise JournalError(f"{path}: line {number}: {exc}") from exc
        decided[entry.index] = entry
    return decided


def append_journal(path: Path, entries: Iterable[JournalEntry]) -> None:
    """Append decided samples, fsynced before returning. A torn last line left by a kill
    is cut off first, so every entry starts a line of its own. When the write fails the
    journal is cut back to what it held (OutputUnavailable on a full or read-only disk)."""
    data = b"".join(
        (json.dumps(e.to_line(), ensure_ascii=False) + "\n").encode("utf-8") for e in entries
    )
    with output_op(path, "opening the isolation journal"):
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        # Unbuffered: a close never writes, so a full disk shows in write or fsync only.
        f = open(path, "wb" if created else "r+b", buffering=0)  # noqa: SIM115 (with below)
    with f:
        keep = _whole_lines(f)
        try:
            with output_op(path, "writing the isolation journal"):
                f.truncate(keep)
                f.seek(keep)
                view = memoryview(data)
                while view:
                    written = f.write(view)
                    if not written:
                        raise OSError(errno.EIO, "journal write made no progress", str(path))
                    view = view[written:]
                os.fsync(f.fileno())
        except OSError as exc:
            cleanup = _cut_back(f, keep)
            if isinstance(exc, OutputUnavailable):
                exc.cleanup = cleanup
            raise
    if created:
        with output_op(path, "syncing the isolation journal's folder"):
            fsync_dir(path.parent)


def _whole_lines(f: BinaryIO) -> int:
    """The length of the file up to the end of its last whole line."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return 0
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return size
    f.seek(0)
    return f.read(size).rfind(b"\n") + 1


def _cut_back(f: BinaryIO, keep: int) -> str:
    """After a failed append, leave the journal as it was (when the disk lets us)."""
    try:
        f.truncate(keep)
        os.fsync(f.fileno())
    except OSError as exc:
        return f"the journal could not be cut back either: {exc}"
    return "the journal was cut back to its last decided sample"


def remove_journal(path: Path) -> bool:
    """Delete a journal (its tar is committed); whether there was one."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True

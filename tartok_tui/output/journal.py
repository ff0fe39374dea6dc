"""Isolation journal: re-run a poison tar sample by sample and find the sample that kills.

A tar that killed workers repeatedly is leased with ``isolate=True``. The
worker then tokenizes one sample at a time and journals each step, fsynced,
in ``OUTPUT/.partial/journal/<tar>.journal`` (one JSON object per line)::

    {"begin": 7, "key": "EN_..."}                    before sample 7 is tokenized
    {"done": 7, "record": {...}}                       its line, or
    {"done": 7, "error": {"key", "stage", "reason"}}   its error record

A sample that has a "begin" but no "done" took the process down: on the next
attempt it gets an error record with stage "worker_crash" (journalled too, so
it stays decided), and every finished sample is replayed instead of
recomputed. The journal survives across attempts until the tar is committed.
A full or read-only output raises ``OutputUnavailable`` (see ``output.target``).

Worker usage::

    journal = IsolationJournal.open(output_dir, input_dir, tar_path)
    with journal, TarWriter(...) as writer:
        for item in iter_samples(tar_path):
            ...  # TarDamage / problem samples as usual (journal.done_error for problems)
            if (entry := journal.outcome(sample.index, sample.key)) is not None:
                entry.apply(writer)          # finished earlier, or the crash sample
                continue
            journal.begin(sample.index, sample.key)
            ...  # tokenize this one sample
            journal.done(sample.index, record)            # or journal.done_error(...)
            writer.add(sample.index, record)
        writer.commit()
    journal.remove()
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from tartok_tui.output.paths import tar_output_paths
from tartok_tui.output.target import OutputUnavailable, fsync_dir, output_op
from tartok_tui.output.writer import TarWriter
from tartok_tui.stages import Stage

CRASH_STAGE = Stage.WORKER_CRASH


class JournalError(Exception):
    """The journal does not belong to this tar (a key differs) or is corrupt mid-file."""


@dataclass(frozen=True)
class JournalEntry:
    """The decided outcome of one sample: a record line or an error."""

    index: int
    key: str
    record: dict[str, Any] | None = None
    stage: str | None = None
    reason: str | None = None

    @property
    def is_error(self) -> bool:
        return self.record is None

    def apply(self, writer: TarWriter) -> None:
        """Give this outcome to the tar's writer."""
        if self.record is not None:
            writer.add(self.index, self.record)
        else:
            writer.add_error(self.index, self.key, self.stage or CRASH_STAGE, self.reason or "")


@dataclass
class JournalState:
    """What earlier attempts left: finished samples and the ones that began but never ended."""

    completed: dict[int, JournalEntry]
    crashed: dict[int, str]
    """index -> key of samples that began and never finished (the process died in them)."""
    valid_bytes: int = 0
    """Length of the journal up to its last complete line."""


def read_journal(path: Path) -> JournalState:
    """Parse a journal; a torn last line (the crash cut the write) is ignored."""
    completed: dict[int, JournalEntry] = {}
    begun: dict[int, str] = {}
    if not path.exists():
        return JournalState(completed, {}, 0)
    data = path.read_bytes()
    # Everything after the last newline was cut by the crash mid-write: the
    # sample it was about stays "begun" (or unstarted) and the tail is dropped.
    valid_bytes = data.rfind(b"\n") + 1
    for number, raw in enumerate(data[:valid_bytes].split(b"\n")):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except ValueError as exc:
            raise JournalError(f"{path}: line {number + 1} is not JSON: {exc}") from exc
        if "begin" in entry:
            begun[int(entry["begin"])] = str(entry["key"])
        elif "done" in entry:
            index = int(entry["done"])
            if "record" in entry:
                record = entry["record"]
                completed[index] = JournalEntry(index, str(record.get("key")), record=record)
            else:
                error = entry["error"]
                completed[index] = JournalEntry(
                    index, str(error["key"]), stage=error["stage"], reason=error["reason"]
                )
        else:
            raise JournalError(f"{path}: line {number + 1} is neither begin nor done")
    crashed = {i: key for i, key in begun.items() if i not in completed}
    return JournalState(completed, crashed, valid_bytes)


class IsolationJournal:
    """Append-only, fsynced journal of one tar's sample-by-sample run (see module doc)."""

    def __init__(self, path: Path, state: JournalState) -> None:
        self.path = path
        self.state = state
        self._file: BinaryIO | None = None
        self._size = state.valid_bytes
        self._open_begin: tuple[int, int] | None = None
        """(index, journal size before its "begin") of the sample being tokenized."""
        try:
            with output_op(path, "opening the journal"):
                path.parent.mkdir(parents=True, exist_ok=True)
                # Unbuffered: a line is on its way to the disk when write returns, and a
                # close never writes (so a full disk shows in _append, and only there).
                self._file = open(path, "ab", buffering=0)  # noqa: SIM115 (closed in close())
                if self._file.tell() > state.valid_bytes:
                    # Drop a torn last line so the next entry starts on a line of its own.
                    self._file.truncate(state.valid_bytes)
                    os.fsync(self._file.fileno())
                fsync_dir(path.parent)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(
        cls, output_dir: Path | str, input_dir: Path | str, tar_path: Path | str
    ) -> IsolationJournal:
        """Open (creating or continuing) the journal of ``tar_path``, loading earlier attempts."""
        path = tar_output_paths(output_dir, input_dir, tar_path).journal
        return cls(path, read_journal(path))

    @property
    def completed(self) -> dict[int, JournalEntry]:
        return self.state.completed

    @property
    def crashed(self) -> dict[int, str]:
        return self.state.crashed

    def outcome(self, index: int, key: str) -> JournalEntry | None:
        """The decided outcome of sample ``index``, or None if it must be tokenized now.

        A sample an earlier attempt died in is decided here as a "worker_crash"
        error, and that decision is journalled before it is returned.
        """
        entry = self.state.completed.get(index)
        if entry is None and index in self.state.crashed:
            key_then = self.state.crashed.pop(index)
            self._check_key(index, key_then, key)
            self.done_error(index, key, CRASH_STAGE, "the worker died while tokenizing this sample")
            return self.state.completed[index]
        if entry is not None:
            self._check_key(index, entry.key, key)
        return entry

    def begin(self, index: int, key: str) -> None:
        """Journal that sample ``index`` is about to be tokenized (fsynced before returning)."""
        start = self._size
        self._append({"begin": index, "key": key}, start)
        self._open_begin = (index, start)

    def done(self, index: int, record: dict[str, Any]) -> None:
        """Journal the finished line of sample ``index``."""
        self._append({"done": index, "record": record}, self._rollback_for(index))
        self._open_begin = None
        self.state.completed[index] = JournalEntry(index, str(record.get("key")), record=record)

    def done_error(self, index: int, key: str, stage: str, reason: str) -> None:
        """Journal that sample ``index`` ended with an error record."""
        entry = {"done": index, "error": {"key": key, "stage": stage, "reason": reason}}
        self._append(entry, self._rollback_for(index))
        self._open_begin = None
        self.state.completed[index] = JournalEntry(index, key, stage=stage, reason=reason)

    def _rollback_for(self, index: int) -> int:
        # A "done" that cannot be written takes its "begin" with it: the sample did
        # not kill the process, and a lone "begin" would blame it on the next attempt.
        if self._open_begin is not None and self._open_begin[0] == index:
            return self._open_begin[1]
        return self._size

    def _append(self, obj: dict[str, Any], rollback_to: int) -> None:
        """Write one entry durably; on a full output, cut the journal back to
        ``rollback_to`` bytes and raise OutputUnavailable."""
        if self._file is None:
            raise RuntimeError(f"{self.path}: journal is closed")
        data = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            with output_op(self.path, "writing the journal"):
                view = memoryview(data)
                while view:
                    written = self._file.write(view)
                    if not written:
                        raise OSError(errno.EIO, "journal write made no progress", str(self.path))
                    view = view[written:]
                # The whole point: the line must be on disk before the risky work starts.
                os.fsync(self._file.fileno())
        except OutputUnavailable as exc:
            try:
                self._file.truncate(rollback_to)
                os.fsync(self._file.fileno())
            except OSError as cut_exc:
                exc.cleanup = f"the journal could not be cut back either: {cut_exc}"
            else:
                self._size = rollback_to
                self._open_begin = None
                exc.cleanup = "the journal was cut back to its last decided sample"
            raise
        self._size += len(data)

    def _check_key(self, index: int, key_then: str, key_now: str) -> None:
        if key_then != key_now:
            raise JournalError(
                f"{self.path}: sample {index} was {key_then!r}, is now {key_now!r}; "
                "the tar changed since the journal was written (delete the journal)"
            )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        """Delete the journal (after the tar is committed)."""
        self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> IsolationJournal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

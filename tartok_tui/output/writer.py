"""TarWriter: one tar's tokens file in sample order, committed atomically.

Results arrive out of order (batches are planned by length), so they wait in
a reorder buffer until every earlier sample is known. A JSONL line then goes to
the partial file at once; a Parquet row is kept (tokens as uint16) and the file
is written at commit, when the whole tar's metadata types are known (see
``output.parquet``). Error records are JSONL in both formats.

``commit()`` makes the tar done: the errors file is published first, then the tar's
commit record (``output.tarmeta``: the run's fingerprint, the input's keys and identity;
when the writer has a fingerprint), then the tokens file, whose existence is the "done" mark (on the local filesystem:
fsync, atomic rename, fsync of the directory; see ``output.target``). Same
results in -> byte-identical files out (for Parquet: with the same pyarrow
version, whose name is written into the file).

A full or read-only output (ENOSPC, EDQUOT, EROFS) raises ``OutputUnavailable``
from ``add``/``add_error``/``commit`` after the writer has aborted itself (its
partial files removed where the filesystem allows; the exception's ``cleanup``
says). It is not the tar's fault: do not record it as one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from tartok_tui.output.parquet import FIXED_COLUMNS, ParquetRow, ParquetRows, compact_row
from tartok_tui.output.parquet import write_parquet as _write_parquet
from tartok_tui.output.paths import (
    DEFAULT_FORMAT,
    OUTPUT_FORMATS,
    PARTIAL_TOUCH_S,
    TarOutputPaths,
    partial_suffix,
    tar_output_paths,
)
from tartok_tui.output.target import (
    LocalTarget,
    OutputTarget,
    OutputUnavailable,
    PartialFile,
    fsync_dir,
)
from tartok_tui.output.tarmeta import InputIdentity, TarMeta, rel_meta

__all__ = [
    "RECORD_FIELDS",
    "IncompleteTar",
    "OutputFormatConflict",
    "OutputUnavailable",
    "ReorderBufferFull",
    "TarWriter",
    "encode_line",
    "fsync_dir",
    "make_record",
]

RECORD_FIELDS = FIXED_COLUMNS
"""The fixed first fields of every record; metadata fields never override them."""

DEFAULT_MAX_PENDING = 16384


class ReorderBufferFull(RuntimeError):
    """More results wait for an earlier sample than the writer allows (a worker bug)."""


class IncompleteTar(RuntimeError):
    """commit() with samples missing: committing would lose them."""


class OutputFormatConflict(RuntimeError):
    """The tar is already done in another format; a second tokens file is not written."""


def make_record(
    key: str,
    meta: Mapping[str, Any] | None,
    global_tokens: Iterable[int],
    semantic_tokens: Iterable[int],
) -> dict[str, Any]:
    """A record: the fixed RECORD_FIELDS, then the other metadata fields in their order."""
    meta = meta or {}
    record: dict[str, Any] = {
        "key": key,
        "language": meta.get("language"),
        "text": meta.get("text"),
        # int() turns numpy / torch scalars into plain ints JSON can write.
        "global_tokens": [int(t) for t in global_tokens],
        "semantic_tokens": [int(t) for t in semantic_tokens],
    }
    for name, value in meta.items():
        if name not in RECORD_FIELDS:
            record[name] = value
    return record


def encode_line(obj: Mapping[str, Any]) -> bytes:
    """The one serialisation of output and error lines."""
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


class _Tokens(Protocol):
    """How records of one format wait, are written in order and finished at commit."""

    part: PartialFile

    def encode(self, record: Mapping[str, Any]) -> Any: ...
    def write(self, item: Any) -> None: ...
    def finish(self) -> None: ...
    def drop(self) -> None: ...


class _JsonlTokens:
    """Each record becomes its line on arrival (a line is several times smaller than the
    dict of token ints) and goes to the partial file once in order."""

    def __init__(self, part: PartialFile) -> None:
        self.part = part

    def encode(self, record: Mapping[str, Any]) -> bytes:
        return encode_line(record)

    def write(self, item: bytes) -> None:
        self.part.write(item)

    def finish(self) -> None:
        return None

    def drop(self) -> None:
        return None


class _ParquetTokens:
    """Records are kept as compact rows and written as one Parquet file at commit."""

    def __init__(self, part: PartialFile, fingerprint: str | None) -> None:
        self.part = part
        self.rows = ParquetRows()
        self.fingerprint = fingerprint

    def encode(self, record: Mapping[str, Any]) -> ParquetRow:
        return compact_row(record)

    def write(self, item: ParquetRow) -> None:
        self.rows.append(item)

    def finish(self) -> None:
        rows, self.rows = self.rows, ParquetRows()
        _write_parquet(rows, self.part, self.fingerprint)

    def drop(self) -> None:
        self.rows = ParquetRows()


class TarWriter:
    """Writes one tar's output. Use as a context manager: leaving it uncommitted aborts.

    Every sample index 0..n-1 must get exactly one ``add`` or ``add_error``;
    tar-level errors use ``add_error(None, None, ...)``. ``output_format`` is
    "jsonl" or "parquet"; ``max_pending`` bounds the reorder buffer (None:
    unbounded); ``target`` is where files go (default: ``LocalTarget(output_dir)``);
    ``fingerprint``: the run manifest's, recorded in the commit record (and a Parquet
    file's metadata); without one no commit record is written.
    Raises ValueError for an unknown format or a tar outside ``input_dir``, and
    OutputUnavailable when the output cannot be written (see the module doc).
    """

    def __init__(
        self,
        output_dir: Path | str,
        input_dir: Path | str,
        tar_path: Path | str,
        *,
        lease_id: int | str = 0,
        output_format: str = DEFAULT_FORMAT,
        max_pending: int | None = DEFAULT_MAX_PENDING,
        target: OutputTarget | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.paths: TarOutputPaths = tar_output_paths(
            output_dir, input_dir, tar_path, output_format
        )
        self.tar_name = str(self.paths.rel_tar)
        self.output_format = output_format
        self.max_pending = max_pending
        self.target: OutputTarget = (
            target if target is not None else LocalTarget(self.paths.output_dir)
        )
        self._suffix = partial_suffix(lease_id)
        self._next_index = 0
        # index -> (is_error, the item in its waiting form)
        self._pending: dict[int, tuple[bool, Any]] = {}
        self._tar_errors: list[bytes] = []
        self.fingerprint = fingerprint
        self._keys: list[str] = []
        """The sample keys written so far, in the tar's order."""
        self._pending_keys: dict[int, str | None] = {}
        self.lines = 0
        """Tokens records written (lines or rows)."""
        self.errors = 0
        self._state = "open"
        part = self.target.open_partial(self.paths.rel_tokens, self._suffix)
        self._tokens: _Tokens = (
            _ParquetTokens(part, fingerprint) if output_format == "parquet" else _JsonlTokens(part)
        )
        self._errors_part: PartialFile | None = None
        self._touched = time.monotonic()

    # ------------------------------------------------------------------ adding

    @property
    def next_index(self) -> int:
        """The first sample index whose result has not been written yet."""
        return self._next_index

    @property
    def pending(self) -> int:
        """Results held back waiting for an earlier sample."""
        return len(self._pending)

    def add(self, index: int, record: Mapping[str, Any]) -> None:
        """The tokens record of sample ``index`` (see :func:`make_record`)."""
        self._check_open()
        self._put(index, False, self._tokens.encode(record), record.get("key"))

    def add_error(self, index: int | None, key: str | None, stage: str, reason: str) -> None:
        """An error record; ``index`` None for a tar-level error (written after all samples)."""
        line = encode_line(
            {"tar": self.tar_name, "key": key, "index": index, "stage": stage, "reason": reason}
        )
        if index is None:
            self._check_open()
            self._tar_errors.append(line)
            self.errors += 1
            return
        self._put(index, True, line, key)

    def _put(self, index: int, is_error: bool, item: Any, key: str | None) -> None:
        self._check_open()
        if index < 0:
            raise ValueError(f"{self.tar_name}: negative sample index {index}")
        if index < self._next_index or index in self._pending:
            raise ValueError(f"{self.tar_name}: sample {index} already has a result")
        self._pending[index] = (is_error, item)
        self._pending_keys[index] = key
        try:
            self._drain()
            self._keep_fresh()
        except OutputUnavailable as exc:
            self._abort_after(exc)
            raise
        if self.max_pending is not None and len(self._pending) > self.max_pending:
            raise ReorderBufferFull(
                f"{self.tar_name}: {len(self._pending)} results wait for sample "
                f"{self._next_index} (max_pending={self.max_pending})"
            )

    def _drain(self) -> None:
        while self._next_index in self._pending:
            is_error, item = self._pending.pop(self._next_index)
            key = self._pending_keys.pop(self._next_index)
            if key is not None:
                self._keys.append(key)
            if is_error:
                self._error_part().write(item)
                self.errors += 1
            else:
                self._tokens.write(item)
                self.lines += 1
            self._next_index += 1

    def _keep_fresh(self) -> None:
        """Touch the partial files every PARTIAL_TOUCH_S while results come in: their age
        is how a run sweeping the output tells a live writer from a dead one, and writes
        alone would not show it (Parquet writes at commit, JSONL every WRITE_BUFFER)."""
        now = time.monotonic()
        if now - self._touched < PARTIAL_TOUCH_S:
            return
        self._touched = now
        for part in (self._tokens.part, self._errors_part):
            if part is not None:
                part.touch()

    def _error_part(self) -> PartialFile:
        if self._errors_part is None:
            self._errors_part = self.target.open_partial(self.paths.rel_errors, self._suffix)
        return self._errors_part

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"{self.tar_name}: writer is already {self._state}")

    # ------------------------------------------------------------------ ending

    def commit(
        self,
        expected_samples: int | None = None,
        *,
        input_keys: list[str] | None = None,
        input_identity: InputIdentity | None = None,
    ) -> None:
        """Make the tar done.

        ``input_keys``: the tar's keys from a scan of its own (recorded as the input's keys;
        without them, the keys written are); ``input_identity``: the input tar's size and
        ETag or mtime when it was read. Both go into the commit record.

        Raises IncompleteTar (and leaves the partial files) if a sample before the
        last result, or before ``expected_samples``, has no result;
        OutputFormatConflict (after aborting) if the tar is already done in another
        format; OutputUnavailable (after aborting) if the output is full or read-only.
        """
        self._check_open()
        if self._pending:
            missing = sorted(set(range(self._next_index, max(self._pending))) - set(self._pending))
            raise IncompleteTar(
                f"{self.tar_name}: no result for samples {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}"
            )
        if expected_samples is not None and self._next_index != expected_samples:
            raise IncompleteTar(
                f"{self.tar_name}: results for {self._next_index} samples, expected {expected_samples}"
            )
        other = self._done_in_other_format()
        if other is not None:
            self.abort()
            raise OutputFormatConflict(
                f"{self.tar_name} is already done as {self.paths.rel_tokens_in(other)}; "
                f"not writing {self.paths.rel_tokens} as well (delete the old file to redo the "
                "tar in the new format)"
            )
        try:
            self._publish(input_keys, input_identity)
        except OutputUnavailable as exc:
            self._abort_after(exc)
            raise
        self._state = "committed"

    def _done_in_other_format(self) -> str | None:
        for output_format in OUTPUT_FORMATS:
            if output_format != self.output_format and self.target.exists(
                self.paths.rel_tokens_in(output_format)
            ):
                return output_format
        return None

    def _publish(self, input_keys: list[str] | None, input_identity: InputIdentity | None) -> None:
        self._tokens.finish()
        self._tokens.part.sync()
        if self._tar_errors:
            self._error_part().write(b"".join(self._tar_errors))
        if self._errors_part is not None:
            self.target.publish(self._errors_part)
        else:
            # An earlier attempt committed errors and died before its tokens
            # rename; this attempt had none, so those records are not true of it.
            self.target.remove(self.paths.rel_errors)
        if self.fingerprint is not None:
            meta = TarMeta(
                tar=self.tar_name,
                fingerprint=self.fingerprint,
                format=self.output_format,
                samples=self._next_index,
                records=self.lines,
                errors=self.errors,
                keys=list(input_keys) if input_keys is not None else self._keys,
                keys_source="scan" if input_keys is not None else "stream",
                input=input_identity,
            )
            part = self.target.open_partial(rel_meta(self.paths), self._suffix)
            part.write(meta.to_bytes())
            self.target.publish(part)
        self.target.publish(self._tokens.part)

    def abort(self) -> None:
        """Drop everything written so far; safe to call more than once.

        Raises the first OSError met while removing a partial file, after trying all.
        """
        if self._state != "open":
            return
        self._state = "aborted"
        self._pending.clear()
        self._pending_keys.clear()
        self._tokens.drop()
        failure: OSError | None = None
        for part in (self._tokens.part, self._errors_part):
            if part is None:
                continue
            try:
                self.target.discard(part)
            except OSError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def _abort_after(self, exc: OutputUnavailable) -> None:
        """Abort because the output is unavailable; ``exc.cleanup`` tells how that went."""
        try:
            self.abort()
        except OSError as cleanup_exc:
            exc.cleanup = f"the partial files could not be removed either: {cleanup_exc}"
        else:
            exc.cleanup = "partial files removed"

    @property
    def committed(self) -> bool:
        return self._state == "committed"

    def __enter__(self) -> TarWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state == "open":
            self.abort()

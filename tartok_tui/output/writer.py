"""TarWriter: one tar's JSONL in sample order, committed atomically.

Results arrive out of order (batches are planned by length), so lines wait in
a reorder buffer until every earlier sample is known, then go to a partial
file. ``commit()`` makes the tar done: fsync, rename the errors file into
place, then the JSONL (its existence is the "done" mark), then fsync the
directories. Same results in -> byte-identical files out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from tartok_tui.output.paths import TarOutputPaths, partial_suffix, tar_output_paths

RECORD_FIELDS = ("key", "language", "text", "global_tokens", "semantic_tokens")
"""The fixed first fields of every line; metadata fields never override them."""

DEFAULT_MAX_PENDING = 16384


class ReorderBufferFull(RuntimeError):
    """More results wait for an earlier sample than the writer allows (a worker bug)."""


class IncompleteTar(RuntimeError):
    """commit() with samples missing: committing would lose them."""


def make_record(
    key: str,
    meta: Mapping[str, Any] | None,
    global_tokens: Iterable[int],
    semantic_tokens: Iterable[int],
) -> dict[str, Any]:
    """A line's dict: the five fixed fields, then the other metadata fields in their order."""
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
        if name not in record:
            record[name] = value
    return record


def encode_line(obj: Mapping[str, Any]) -> bytes:
    """The one serialisation of output and error lines."""
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


def fsync_dir(path: Path) -> None:
    """Persist a directory entry change (a rename or unlink) in ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TarWriter:
    """Writes one tar's output. Use as a context manager: leaving it uncommitted aborts.

    Every sample index 0..n-1 must get exactly one ``add`` or ``add_error``;
    tar-level errors use ``add_error(None, None, ...)``. ``max_pending`` bounds
    the reorder buffer (None: unbounded).
    """

    def __init__(
        self,
        output_dir: Path | str,
        input_dir: Path | str,
        tar_path: Path | str,
        *,
        lease_id: int | str = 0,
        max_pending: int | None = DEFAULT_MAX_PENDING,
    ) -> None:
        self.paths: TarOutputPaths = tar_output_paths(output_dir, input_dir, tar_path)
        self.tar_name = str(self.paths.rel_tar)
        self.max_pending = max_pending
        suffix = partial_suffix(lease_id)
        self._partial_jsonl = self.paths.partial_jsonl(suffix)
        self._partial_errors = self.paths.partial_errors(suffix)
        self._next_index = 0
        # index -> (is_error, encoded line); lines are encoded on arrival because
        # a dict of token ints costs several times its JSON text.
        self._pending: dict[int, tuple[bool, bytes]] = {}
        self._tar_errors: list[bytes] = []
        self.lines = 0
        self.errors = 0
        self._state = "open"
        self._partial_jsonl.parent.mkdir(parents=True, exist_ok=True)
        self._jsonl: BinaryIO = open(self._partial_jsonl, "wb")  # noqa: SIM115 (closed in commit/abort)
        self._errors_file: BinaryIO | None = None

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
        """The tokens line of sample ``index`` (see :func:`make_record`)."""
        self._put(index, False, encode_line(record))

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
        self._put(index, True, line)

    def _put(self, index: int, is_error: bool, line: bytes) -> None:
        self._check_open()
        if index < 0:
            raise ValueError(f"{self.tar_name}: negative sample index {index}")
        if index < self._next_index or index in self._pending:
            raise ValueError(f"{self.tar_name}: sample {index} already has a result")
        self._pending[index] = (is_error, line)
        self._drain()
        if self.max_pending is not None and len(self._pending) > self.max_pending:
            raise ReorderBufferFull(
                f"{self.tar_name}: {len(self._pending)} results wait for sample "
                f"{self._next_index} (max_pending={self.max_pending})"
            )

    def _drain(self) -> None:
        while self._next_index in self._pending:
            is_error, line = self._pending.pop(self._next_index)
            if is_error:
                self._error_file().write(line)
                self.errors += 1
            else:
                self._jsonl.write(line)
                self.lines += 1
            self._next_index += 1

    def _error_file(self) -> BinaryIO:
        if self._errors_file is None:
            self._partial_errors.parent.mkdir(parents=True, exist_ok=True)
            self._errors_file = open(self._partial_errors, "wb")  # noqa: SIM115
        return self._errors_file

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"{self.tar_name}: writer is already {self._state}")

    # ------------------------------------------------------------------ ending

    def commit(self, expected_samples: int | None = None) -> None:
        """Make the tar done. Raises IncompleteTar (and leaves the partial files) if a
        sample before the last result, or before ``expected_samples``, has no result."""
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
        final_jsonl, final_errors = self.paths.jsonl, self.paths.errors
        self._jsonl.flush()
        os.fsync(self._jsonl.fileno())
        self._jsonl.close()
        if self._tar_errors:
            self._error_file().writelines(self._tar_errors)
        if self._errors_file is not None:
            self._errors_file.flush()
            os.fsync(self._errors_file.fileno())
            self._errors_file.close()
            final_errors.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._partial_errors, final_errors)
            fsync_dir(final_errors.parent)
        elif final_errors.exists():
            # An earlier attempt committed errors and died before its JSONL
            # rename; this attempt had none, so those records are not true of it.
            final_errors.unlink()
            fsync_dir(final_errors.parent)
        final_jsonl.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._partial_jsonl, final_jsonl)
        fsync_dir(final_jsonl.parent)
        self._state = "committed"

    def abort(self) -> None:
        """Drop everything written so far; safe to call more than once."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._pending.clear()
        for handle, path in (
            (self._jsonl, self._partial_jsonl),
            (self._errors_file, self._partial_errors),
        ):
            if handle is not None:
                handle.close()
            path.unlink(missing_ok=True)

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

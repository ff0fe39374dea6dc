"""Reading an input file, local or remote, so that a failure to read it is never mistaken
for a damaged file.

A remote object is read through a file object with bounded read-ahead (never downloaded
whole first). A read that fails for a transient reason (connection reset or refused, 5xx,
timeout, a body cut short) is retried from the offset reached, on a fresh file object,
with exponential backoff and a bounded number of tries; a throttled read (429, 503
SlowDown) waits under the throttling policy (minutes, see ``storage.retrying``); then
InputUnavailable. Every read returns exactly the bytes asked for (up to the object's end)
or raises: a short read would look like a truncated tar.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tartok_tui.storage.errors import FaultKind, InputUnavailable, classify
from tartok_tui.storage.filesystems import filesystem
from tartok_tui.storage.retrying import (
    Retrier,
    RetryEvent,
    RetryPolicy,
    ThrottleGauge,
    ThrottlePolicy,
)
from tartok_tui.storage.urls import is_url, redact_text, redact_url

log = logging.getLogger("tartok_tui.storage")

DEFAULT_READ_AHEAD = 8 << 20
"""Bytes fetched past a sequential read: one ranged GET per 8 MiB of tar."""
_RANGE_CHUNK = 8 << 20
"""The most bytes one ranged request asks for (a failure retries no more than this)."""
_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)
"""The object is not there (or not an object): raised as they are."""


def _log_retry(event: RetryEvent) -> None:
    log.warning("%s", event)


@dataclass(frozen=True)
class Access:
    """How inputs on object storage are reached (local paths ignore all of it)."""

    options: Mapping[str, Any] = field(default_factory=dict)
    """fsspec storage options (``--storage-options``); never logged."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    read_ahead: int = DEFAULT_READ_AHEAD
    parallel_reads: int = 8
    """Byte ranges read at once when reading scattered members (one request each)."""
    on_retry: Callable[[RetryEvent], None] = _log_retry
    throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    gauge: ThrottleGauge | None = None
    """Where calls waiting on a throttled store are shown (the worker's heartbeat)."""

    def retrier(self) -> Retrier:
        """A new streak of failures for one call (see ``storage.retrying``)."""
        return Retrier(self.retry, self.throttle, self.on_retry, self.gauge)


class LocalInput:
    """A local file whose read errors are InputUnavailable (a failing disk is not damage)."""

    parallel_reads = 1
    """Scattered reads gain nothing from threads on a local file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.name = os.fspath(path)
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.size = os.fstat(self._file.fileno()).st_size

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except Exception as exc:  # whatever the file raises, the tar is not to blame
            raise InputUnavailable(f"cannot read {self.name}: {exc}") from exc

    def read(self, size: int | None = -1) -> bytes:
        return self._call(self._file.read, size)

    def readinto(self, buffer: Any) -> int:
        return self._call(self._file.readinto, buffer)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._call(self._file.seek, offset, whence)

    def read_range(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer at the end of the file), from any thread."""
        return self._call(_pread, self._file.fileno(), offset, size)

    def tell(self) -> int:
        return self._file.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def __enter__(self) -> LocalInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pread_chunks(fd: int, offset: int, size: int) -> Iterator[bytes]:
    """``size`` bytes of ``fd`` from ``offset`` (fewer at its end), a chunk at a time."""
    while size > 0:
        chunk = os.pread(fd, min(size, _RANGE_CHUNK), offset)
        if not chunk:
            return
        yield chunk
        offset += len(chunk)
        size -= len(chunk)


def _pread(fd: int, offset: int, size: int) -> bytes:
    return b"".join(pread_chunks(fd, offset, size))


class _CutShort(Exception):
    """The store ended a body before the object's end."""


class RemoteInput:
    """A seekable, read-only view of one object that retries failed reads (see the module doc).

    ``sequential``: reads go front to back, so each fetch reads ``read_ahead`` bytes ahead;
    otherwise each read fetches exactly its range (reads scattered over the object).
    """

    def __init__(self, url: str, access: Access, *, sequential: bool) -> None:
        self.url = url
        self.name = redact_url(url)
        self._access = access
        self._fs, self._path = filesystem(url, access.options)
        self._open_kwargs: dict[str, Any] = (
            {"block_size": access.read_ahead, "cache_type": "readahead"}
            if sequential
            else {"block_size": 1 << 20, "cache_type": "none"}
        )
        self._file: Any = None
        self._pos = 0
        self._closed = False
        self.parallel_reads = access.parallel_reads
        self.retries = 0
        """Failed reads retried so far (all streaks)."""
        self.size = self._retrying(lambda: int(self._fs.size(self._path)), missing_raises=True)

    # -- retrying ------------------------------------------------------------------------

    def _retrying(self, attempt: Callable[[], Any], *, missing_raises: bool = False) -> Any:
        retrier = self._access.retrier()
        while True:
            try:
                result = attempt()
            except Exception as exc:
                self._failed(exc, retrier, 0, missing_raises)
                continue
            retrier.succeeded()
            return result

    def _failed(
        self, exc: Exception, retrier: Retrier, offset: int, missing_raises: bool = False
    ) -> None:
        """After a failed try: sleep and return (retry), or raise."""
        fault = classify(exc)
        if isinstance(exc, _MISSING) or fault.kind == FaultKind.MISSING:
            retrier.succeeded()  # the streak ends here
            if missing_raises and isinstance(exc, _MISSING):
                raise exc
            raise self._unavailable(exc, offset, "") from exc
        if not retrier.retry(fault, self.name, "reading", self._describe(exc), offset):
            raise self._unavailable(exc, offset, retrier.spent(fault)) from exc
        self.retries += 1

    def _describe(self, exc: BaseException) -> str:
        return redact_text(f"{type(exc).__name__}: {exc}", self._access.options)

    def _unavailable(self, exc: BaseException, offset: int, tries: str) -> InputUnavailable:
        return InputUnavailable(
            f"cannot read {self.name} at byte {offset}{tries}: {self._describe(exc)}"
        )

    def _discard(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except Exception as exc:  # a broken connection may fail to close; it is dropped
                log.debug("closing %s: %s", self.name, self._describe(exc))

    # -- the file interface --------------------------------------------------------------

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        chunks: list[bytes] = []
        retrier = self._access.retrier()
        while self._pos < end:
            try:
                if self._file is None:
                    self._file = self._fs.open(self._path, "rb", **self._open_kwargs)
                    self._file.seek(self._pos)
                data = self._file.read(end - self._pos)
                if not data:
                    raise _CutShort(f"the body ended at byte {self._pos} of {self.size}")
            except Exception as exc:
                self._discard()
                self._failed(exc, retrier, self._pos)
                continue
            chunks.append(data)
            self._pos += len(data)
            retrier.succeeded()
        return b"".join(chunks)

    def read_range(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer at the object's end), one ranged request per
        8 MiB, from any thread; retried like :meth:`read`."""
        end = min(self.size, offset + size)
        chunks: list[bytes] = []
        retrier = self._access.retrier()
        while offset < end:
            stop = min(end, offset + _RANGE_CHUNK)
            try:
                data = self._fs.cat_file(self._path, start=offset, end=stop)
                if not data:
                    raise _CutShort(f"the body ended at byte {offset} of {self.size}")
            except Exception as exc:
                self._failed(exc, retrier, offset)
                continue
            chunks.append(data)
            offset += len(data)
            retrier.succeeded()
        return b"".join(chunks)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        if self._file is not None:
            self._file.seek(min(self._pos, self.size))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._closed = True
        self._discard()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> RemoteInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_input(
    location: str | os.PathLike[str], *, sequential: bool = True, access: Access | None = None
) -> LocalInput | RemoteInput:
    """An input file, seekable, with a ``size``: a URL through its store (retrying failed
    reads), a local path directly. A missing file or object raises FileNotFoundError; a
    failure to read raises InputUnavailable."""
    if is_url(location):
        return RemoteInput(str(location), access or Access(), sequential=sequential)
    return LocalInput(location)

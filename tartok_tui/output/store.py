"""An output on object storage: whole objects uploaded, listed, checked and removed.

Every object is written by one call that makes it appear whole or not at all: one PUT,
or a multipart upload completed after its last part (s3fs aborts it on failure; gcsfs
finalises a resumable upload last; the Hub commits a file in one commit). Nothing
partial is ever visible under the output prefix.

A failed call is sorted by what the store answered (``storage.errors.classify``: the HTTP
status and error code, never the message's words):

- the store takes no more from us (507, a ``QuotaExceeded``-like code, read-only, access
  denied, bucket gone): ``OutputUnavailable``, and the run stops as for a full local disk;
- throttled (429, 503, ``SlowDown``): waited out under the throttling policy (minutes,
  ``Retry-After`` honoured), then ``StoreUnavailable``;
- anything else (connection refused or reset, 5xx, timeouts) is retried with backoff
  (``Access.retry``), then ``StoreUnavailable``: the lease fails uncommitted and the tar
  is tried again.

No message carries a secret: URLs and error texts go through the redaction helpers.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from tartok_tui.output.target import OutputUnavailable
from tartok_tui.storage import (
    Access,
    FaultKind,
    classify,
    filesystem,
    redact_text,
    redact_url,
)
from tartok_tui.storage.retrying import Retrier

log = logging.getLogger("tartok_tui.output")

T = TypeVar("T")

_BUGS = (TypeError, AttributeError, NameError, AssertionError, NotImplementedError)
"""A mistake in the program, not a store's hiccup: never retried."""


class StoreUnavailable(OSError):
    """The store could not be reached (after retries) to write, check or remove an object.

    Neither the tar's fault nor a full output: the lease fails uncommitted and the tar is
    tried again.
    """


class StoreOutput:
    """An output prefix on object storage (``s3://bucket/tokens``), keys relative to it."""

    def __init__(self, url: str, access: Access | None = None) -> None:
        self.url = url.rstrip("/")
        self.name = redact_url(self.url)
        self.access = access or Access()
        self.fs, root = filesystem(self.url, self.access.options)
        self.root = root.rstrip("/")

    def path(self, key: PurePosixPath | str) -> str:
        """The store's path of ``key`` (no scheme)."""
        return f"{self.root}/{key}"

    def url_of(self, key: PurePosixPath | str) -> str:
        return f"{self.url}/{key}"

    def describe(self, exc: BaseException) -> str:
        return redact_text(f"{type(exc).__name__}: {exc}", self.access.options)

    # -- the calls -------------------------------------------------------------------------

    def upload(self, local: Path, key: PurePosixPath | str) -> None:
        """Make ``key`` the object holding ``local``'s bytes, whole or not at all."""
        path = self.path(key)
        self.call("uploading", key, lambda: self.fs.put_file(str(local), path))

    def put_bytes(self, key: PurePosixPath | str, data: bytes) -> None:
        """Make ``key`` the object holding ``data`` (one PUT)."""
        path = self.path(key)
        self.call("uploading", key, lambda: self.fs.pipe_file(path, data))

    def read_bytes(self, key: PurePosixPath | str) -> bytes:
        path = self.path(key)
        return self.call("reading", key, lambda: self.fs.cat_file(path))

    def exists(self, key: PurePosixPath | str) -> bool:
        """Whether the object ``key`` exists now (asked of the store, not a cached listing)."""
        path = self.path(key)

        def probe() -> bool:
            self.fs.invalidate_cache(path)
            try:
                self.fs.info(path)
            except FileNotFoundError:
                return False
            return True

        return self.call("checking", key, probe)

    def remove(self, key: PurePosixPath | str) -> None:
        """Delete the object ``key`` if it exists."""
        path = self.path(key)

        def delete() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(path)
            self.fs.invalidate_cache(path)

        self.call("removing", key, delete)

    def list_keys(self) -> dict[PurePosixPath, int]:
        """Every object under the prefix, key -> size in bytes (one listing; an empty or
        missing prefix gives an empty dict)."""

        def listing() -> dict[str, Any]:
            self.fs.invalidate_cache(self.root)
            try:
                return self.fs.find(self.root, withdirs=False, detail=True)
            except FileNotFoundError:
                return {}

        found = self.call("listing", "", listing)
        prefix = self.root + "/"
        return {
            PurePosixPath(name[len(prefix) :]): int(info.get("size") or 0)
            for name, info in found.items()
            if name.startswith(prefix) and info.get("type", "file") == "file"
        }

    # -- retrying --------------------------------------------------------------------------

    def call(self, action: str, key: PurePosixPath | str, call: Callable[[], T]) -> T:
        """``call()``, retried on errors a retry may mend (see the module doc)."""
        where = self.name + (f"/{key}" if str(key) else "")
        retrier = self.access.retrier()
        while True:
            try:
                result = call()
            except _BUGS:
                raise
            except Exception as exc:
                self._failed(exc, retrier, action, where)
                continue
            retrier.succeeded()
            return result

    def _failed(self, exc: Exception, retrier: Retrier, action: str, where: str) -> None:
        """After a failed try: sleep and return (retry), or raise."""
        fault = classify(exc)
        if fault.kind == FaultKind.EXHAUSTED:
            retrier.end()
            err = fault.errno if fault.errno is not None else errno.EIO
            reason = f"{fault.said}: {self.describe(exc)}"
            raise OutputUnavailable(err, where, action, reason=reason) from exc
        if fault.kind == FaultKind.MISSING:
            retrier.end()
            if action != "uploading":
                raise exc
            # The bucket (or the Hub repo) is not there: nothing will be written.
            raise OutputUnavailable(
                errno.ENOENT, where, action, reason=f"not found ({self.describe(exc)})"
            ) from exc
        if not retrier.retry(fault, where, action, self.describe(exc)):
            raise StoreUnavailable(
                f"{action} {where} failed{retrier.spent(fault)}: {self.describe(exc)}"
            ) from exc

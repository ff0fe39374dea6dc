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
from collections.abc import Callable, Iterator
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


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (s3fs keeps botocore's as the cause)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _code(exc: BaseException) -> str:
    """A store's error code when the exception carries one (botocore's ClientError)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _precondition_failed(exc: BaseException) -> bool:
    """The store refused a conditional request because its condition did not hold (412);
    s3fs turns it into FileExistsError or an EINVAL OSError, keeping botocore's as the cause."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        meta = response.get("ResponseMetadata", {}) if isinstance(response, dict) else {}
        if _code(e) == "PreconditionFailed" or meta.get("HTTPStatusCode") == 412:
            return True
    return False


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

    # -- conditional requests (S3) ----------------------------------------------------------

    @property
    def conditional(self) -> bool:
        """Whether the store decides conditional writes itself (S3's If-None-Match / If-Match:
        412 when the condition fails), so a check and a write are one atomic step."""
        return self.url.split("://", 1)[0].lower() in ("s3", "s3a")

    def read_tagged(self, key: PurePosixPath | str) -> tuple[bytes, str, float] | None:
        """(bytes, ETag, last-modified as a Unix time) of ``key``, or None when it is absent.

        The ETag is asked first: should the object change before its bytes are read, a
        write conditional on that ETag fails, so the pair never passes for a newer state."""
        path = self.path(key)

        def get() -> tuple[bytes, str, float] | None:
            self.fs.invalidate_cache(path)
            try:
                info = self.fs.info(path)
                data = self.fs.cat_file(path)
            except FileNotFoundError:
                return None
            return data, str(info["ETag"]), info["LastModified"].timestamp()

        return self.call("reading", key, get)

    def put_if(self, key: PurePosixPath | str, data: bytes, etag: str | None) -> str | None:
        """Write ``key`` only if it is absent (``etag`` None) or still holds ``etag``; returns
        the new ETag, or None when the condition failed (the store's 412)."""
        bucket, name = self._bucket_key(key)
        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}

        def put() -> str | None:
            try:
                reply = self.fs.call_s3(
                    "put_object", Bucket=bucket, Key=name, Body=data, **condition
                )
            except Exception as exc:
                if _precondition_failed(exc):
                    return None
                raise
            finally:
                self.fs.invalidate_cache(self.path(key))
            return str(reply["ETag"])

        return self.call("uploading", key, put)

    def remove_if(self, key: PurePosixPath | str, etag: str) -> bool:
        """Delete ``key`` only if it still holds ``etag``; False when it does not (or is gone)."""
        bucket, name = self._bucket_key(key)

        def delete() -> bool:
            try:
                self.fs.call_s3("delete_object", Bucket=bucket, Key=name, IfMatch=etag)
            except FileNotFoundError:
                return False
            except Exception as exc:
                if _precondition_failed(exc):
                    return False
                raise
            finally:
                self.fs.invalidate_cache(self.path(key))
            return True

        return self.call("removing", key, delete)

    def _bucket_key(self, key: PurePosixPath | str) -> tuple[str, str]:
        bucket, _, name = self.path(key).partition("/")
        return bucket, name

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
            retrier.succeeded()
            err = fault.errno if fault.errno is not None else errno.EIO
            reason = f"{fault.said}: {self.describe(exc)}"
            raise OutputUnavailable(err, where, action, reason=reason) from exc
        if fault.kind == FaultKind.MISSING:
            retrier.succeeded()
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

"""Errors of the storage layer, and what a failed call to a store means.

An input that cannot be read is never a damaged input, and a store that asks us to slow
down is neither broken nor full. ``classify`` sorts a failure by what the store *said*
(the HTTP status, the store's error code, a ``Retry-After``) or by the errno the OS gave,
never by the words of a message: a 429 whose text says "exceeded our hourly quotas" is
throttling, not a full quota.
"""

from __future__ import annotations

import email.utils
import enum
import errno
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_CREDENTIALS = re.compile(r"Credential|Unauthori[sz]ed|Forbidden|ExpiredToken", re.IGNORECASE)


class StorageError(Exception):
    """A URL that cannot be used as given (unknown scheme, missing backend): a usage error,
    reported before any work starts (the CLI exits 2)."""


class BackendMissing(StorageError):
    """The package that reads this kind of URL is not installed; the message names the
    extra to install (``pip install 'tartok-tui[s3]'``)."""


class InputUnavailable(OSError):
    """An input could not be read (I/O error, network failure after retries, object gone).

    The input itself may be fine: a lease that meets this fails uncommitted and the tar is
    tried again, unlike damage, which is recorded and marks the tar done. A subclass of
    OSError, so code that treats any OSError as "cannot read the file" handles it already.
    """


def is_credentials_error(exc: BaseException) -> bool:
    """Missing, partial, expired or refused credentials (botocore's NoCredentialsError,
    google-auth's DefaultCredentialsError, ...): no retry mends them."""
    return isinstance(exc, PermissionError) or any(
        _CREDENTIALS.search(cls.__name__) for cls in type(exc).__mro__
    )


# -- what a failure means ------------------------------------------------------------------


class FaultKind(enum.StrEnum):
    THROTTLED = "throttled"
    """The store asks us to slow down (429, 503, SlowDown): wait, long if it keeps asking."""
    EXHAUSTED = "exhausted"
    """The store (or disk) takes no more: no space, quota exceeded, read-only, access denied.
    No retry mends it; for an output the run stops (exit 4)."""
    MISSING = "missing"
    """The object, bucket or repository is not there."""
    TRANSIENT = "transient"
    """Anything else (connection reset or refused, timeouts, other 5xx): retried a few
    times under the network policy."""


EXHAUSTED_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
}
"""Errors that mean the output cannot take more data: stop the run, not the tar."""

THROTTLE_STATUSES = frozenset({429, 503})
THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "SlowDownRead",
        "SlowDownWrite",
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequests",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "rateLimitExceeded",
        "userRateLimitExceeded",
    }
)
"""Stores' error codes for "slow down" (S3 and S3-compatible stores, GCS's JSON API)."""

EXHAUSTED_CODES: dict[str, int] = {
    "QuotaExceeded": errno.EDQUOT,
    "XMinioAdminBucketQuotaExceeded": errno.EDQUOT,
    "XMinioStorageFull": errno.ENOSPC,
    "InsufficientStorage": errno.ENOSPC,
    "StorageQuotaExceeded": errno.EDQUOT,
}
"""Error codes for a store that is full or over its quota (not a request-rate quota)."""

INSUFFICIENT_STORAGE = 507
REFUSED_STATUSES = frozenset({401, 403})
REFUSED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "Forbidden",
    }
)
MISSING_STATUSES = frozenset({404})
MISSING_CODES = frozenset({"NoSuchBucket", "NoSuchKey", "RepoNotFound", "EntryNotFound"})


@dataclass(frozen=True)
class Fault:
    """What a failed call means (see ``classify``)."""

    kind: FaultKind
    status: int | None = None
    """The HTTP status the store answered, when known."""
    code: str = ""
    """The store's error code (S3 ``Error.Code``, the Hub's ``X-Error-Code``)."""
    retry_after_s: float | None = None
    """How long the store asked us to wait (``Retry-After``), when it said."""
    errno: int | None = None
    """For EXHAUSTED: ENOSPC, EDQUOT, EROFS or EACCES (access refused)."""

    @property
    def said(self) -> str:
        """What the store answered, in a few words (``503 SlowDown``); no message text, so
        nothing secret."""
        parts = [str(self.status)] if self.status is not None else []
        if self.code and self.code != str(self.status):
            parts.append(self.code)
        if not parts and self.errno is not None:
            parts.append(errno.errorcode.get(self.errno, str(self.errno)))
        return " ".join(parts) or self.kind.value


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling (s3fs keeps
    botocore's ClientError as the cause of the OSError it raises)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _header(headers: Any, name: str) -> str | None:
    """A header from a botocore dict (lower-case keys) or a case-insensitive mapping."""
    if not isinstance(headers, Mapping) and not hasattr(headers, "get"):
        return None
    value = headers.get(name) or headers.get(name.lower())
    return str(value) if value is not None else None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _http(exc: BaseException) -> tuple[int | None, str, Any] | None:
    """(status, code, headers) when ``exc`` carries a store's answer, else None.

    botocore's ClientError: ``response`` dict with ResponseMetadata and Error; the Hub's
    HfHubHTTPError (requests/httpx): ``response.status_code`` and headers; aiohttp's
    ClientResponseError (gcsfs): ``status`` and ``headers``; gcsfs' HttpError: ``code``."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        meta = response.get("ResponseMetadata") or {}
        error = response.get("Error") or {}
        status = meta.get("HTTPStatusCode")
        code = str(error.get("Code") or "")
        if status is None and code.isdigit():
            status = int(code)
        if status is None and not code:
            return None
        return (int(status) if status is not None else None), code, meta.get("HTTPHeaders")
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        headers = getattr(response, "headers", None)
        return status, _header(headers, "X-Error-Code") or "", headers
    for name in ("status", "code"):
        value = getattr(exc, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value < 600:
            return value, "", getattr(exc, "headers", None)
    return None


def _from_http(status: int | None, code: str, headers: Any) -> Fault:
    retry_after = parse_retry_after(_header(headers, "Retry-After"))
    if code in EXHAUSTED_CODES:
        return Fault(FaultKind.EXHAUSTED, status, code, None, EXHAUSTED_CODES[code])
    if status == INSUFFICIENT_STORAGE:
        return Fault(FaultKind.EXHAUSTED, status, code, None, errno.ENOSPC)
    if code in THROTTLE_CODES or status in THROTTLE_STATUSES:
        return Fault(FaultKind.THROTTLED, status, code, retry_after)
    if code in REFUSED_CODES or status in REFUSED_STATUSES:
        return Fault(FaultKind.EXHAUSTED, status, code, None, errno.EACCES)
    if code in MISSING_CODES or status in MISSING_STATUSES:
        return Fault(FaultKind.MISSING, status, code)
    return Fault(FaultKind.TRANSIENT, status, code, retry_after)


def classify(exc: BaseException) -> Fault:
    """What a failed storage call means, from the store's status and error code (looked
    for down the exception chain) or the errno; never from the message's words.

    An exception that already says the output is unavailable keeps its errno."""
    for e in chain(exc):
        known = getattr(e, "fault", None)
        if isinstance(known, Fault):
            return known
        answer = _http(e)
        if answer is not None:
            return _from_http(*answer)
        err = getattr(e, "errno", None)
        if err in EXHAUSTED_ERRNOS:
            return Fault(FaultKind.EXHAUSTED, errno=err)
    for e in chain(exc):
        if is_credentials_error(e):
            return Fault(FaultKind.EXHAUSTED, errno=errno.EACCES)
        if isinstance(e, FileNotFoundError):
            return Fault(FaultKind.MISSING)
    return Fault(FaultKind.TRANSIENT)

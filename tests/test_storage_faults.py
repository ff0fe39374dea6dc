"""What a failed storage call means, decided by the store's status and error code (never by
the words of its message), and how each kind is retried: built exception objects, no network."""

from __future__ import annotations

import email.utils
import errno
import time

import aiohttp
import botocore.exceptions
import pytest
import requests
from huggingface_hub.errors import HfHubHTTPError
from s3fs.errors import translate_boto_error

from tartok_tui.output.target import OutputUnavailable
from tartok_tui.storage import (
    Fault,
    FaultKind,
    Retrier,
    RetryEvent,
    RetryPolicy,
    ThrottleGauge,
    ThrottlePolicy,
    classify,
)
from tartok_tui.storage.errors import parse_retry_after

THROTTLED, EXHAUSTED, MISSING, TRANSIENT = (
    FaultKind.THROTTLED,
    FaultKind.EXHAUSTED,
    FaultKind.MISSING,
    FaultKind.TRANSIENT,
)
HUB_QUOTA_TEXT = (
    "You have exceeded our hourly quotas for action commit. We invite you to retry later."
)


def client_error(
    code: str, status: int, message: str = "", headers: dict[str, str] | None = None
) -> botocore.exceptions.ClientError:
    """A ClientError as botocore builds it from a store's answer."""
    response = {
        "Error": {"Code": code, "Message": message or code},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
    }
    return botocore.exceptions.ClientError(response, "PutObject")  # type: ignore[arg-type]


def hub_error(status: int, message: str = "", headers: dict[str, str] | None = None) -> Exception:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    return HfHubHTTPError(message or f"{status} Client Error", response=response)


BOTOCORE_CASES = [
    (client_error("SlowDown", 503, "Please reduce your request rate."), THROTTLED, None),
    (client_error("RequestLimitExceeded", 400), THROTTLED, None),
    (client_error("ThrottlingException", 400), THROTTLED, None),
    # A non-XML 429 (the Hub's words): botocore makes the status the code.
    (client_error("429", 429, HUB_QUOTA_TEXT), THROTTLED, None),
    (client_error("ServiceUnavailable", 503), THROTTLED, None),
    (client_error("QuotaExceeded", 403, "Bucket quota exceeded"), EXHAUSTED, errno.EDQUOT),
    (client_error("InsufficientStorage", 507), EXHAUSTED, errno.ENOSPC),
    (client_error("507", 507, "whatever the text says"), EXHAUSTED, errno.ENOSPC),
    (
        client_error("XMinioStorageFull", 507, "minimum free drive threshold"),
        EXHAUSTED,
        errno.ENOSPC,
    ),
    (client_error("AccessDenied", 403), EXHAUSTED, errno.EACCES),
    (client_error("ExpiredToken", 400), EXHAUSTED, errno.EACCES),
    (client_error("NoSuchKey", 404), MISSING, None),
    (client_error("NoSuchBucket", 404), MISSING, None),
    (client_error("InternalError", 500, "quota exceeded, storage full"), TRANSIENT, None),
    (client_error("RequestTimeout", 400), TRANSIENT, None),
]


@pytest.mark.parametrize(("exc", "kind", "err"), BOTOCORE_CASES)
def test_botocore_errors_and_s3fs_s_translations_of_them_mean_the_same(
    exc: botocore.exceptions.ClientError, kind: FaultKind, err: int | None
) -> None:
    fault = classify(exc)
    assert (fault.kind, fault.errno) == (kind, err)
    assert fault.status == exc.response["ResponseMetadata"]["HTTPStatusCode"]
    # s3fs raises an OSError (or PermissionError, FileNotFoundError) from the ClientError.
    translated = translate_boto_error(exc)
    assert translated is not exc and translated.__cause__ is exc
    assert (classify(translated).kind, classify(translated).errno) == (kind, err)
    # ... and code that catches it may raise again from it.
    try:
        try:
            raise translated
        except OSError as inner:
            raise OSError(errno.EIO, "upload failed") from inner
    except OSError as outer:
        assert classify(outer).kind == kind


def test_the_words_of_a_message_never_decide() -> None:
    # "quota" in a throttled answer is a rate quota, not a full store.
    assert classify(client_error("429", 429, HUB_QUOTA_TEXT)).kind == THROTTLED
    assert classify(hub_error(429, HUB_QUOTA_TEXT)).kind == THROTTLED
    # A message alone says nothing: no status, no code, no errno that means "full".
    for text in ("Bucket quota exceeded", "insufficient storage", "read-only", "507"):
        assert classify(OSError(errno.EIO, text)).kind == TRANSIENT
        assert classify(RuntimeError(text)).kind == TRANSIENT


def test_retry_after_is_read_in_seconds_or_as_an_http_date() -> None:
    fault = classify(client_error("SlowDown", 503, headers={"retry-after": "40"}))
    assert fault.retry_after_s == 40.0 and fault.said == "503 SlowDown"
    soon = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert 100 < (parse_retry_after(soon) or 0) <= 120
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("exc", "kind", "err", "retry_after"),
    [
        (hub_error(429, HUB_QUOTA_TEXT, {"Retry-After": "55"}), THROTTLED, None, 55.0),
        (hub_error(503), THROTTLED, None, None),
        (hub_error(507), EXHAUSTED, errno.ENOSPC, None),
        (hub_error(403, "Forbidden"), EXHAUSTED, errno.EACCES, None),
        (hub_error(401), EXHAUSTED, errno.EACCES, None),
        (hub_error(404, headers={"X-Error-Code": "RepoNotFound"}), MISSING, None, None),
        (hub_error(500), TRANSIENT, None, None),
        (hub_error(502), TRANSIENT, None, None),
    ],
)
def test_hugging_face_hub_errors_are_sorted_by_their_response_status(
    exc: Exception, kind: FaultKind, err: int | None, retry_after: float | None
) -> None:
    fault = classify(exc)
    assert (fault.kind, fault.errno, fault.retry_after_s) == (kind, err, retry_after)


def test_aiohttp_response_errors_gcsfs_raises_carry_their_status() -> None:
    exc = aiohttp.ClientResponseError(None, (), status=429, headers={"Retry-After": "5"})  # type: ignore[arg-type]
    assert classify(exc) == Fault(THROTTLED, 429, "", 5.0)


@pytest.mark.parametrize(
    ("exc", "kind", "err"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), EXHAUSTED, errno.ENOSPC),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), EXHAUSTED, errno.EDQUOT),
        (OSError(errno.EROFS, "Read-only file system"), EXHAUSTED, errno.EROFS),
        (PermissionError(errno.EACCES, "Permission denied"), EXHAUSTED, errno.EACCES),
        (botocore.exceptions.NoCredentialsError(), EXHAUSTED, errno.EACCES),
        (FileNotFoundError(errno.ENOENT, "gone"), MISSING, None),
        (ConnectionResetError(), TRANSIENT, None),
        (ConnectionRefusedError(), TRANSIENT, None),
        (TimeoutError(), TRANSIENT, None),
        (OSError(errno.EIO, "Input/output error"), TRANSIENT, None),
        (OutputUnavailable(errno.EDQUOT, "s3://b/x", "uploading"), EXHAUSTED, errno.EDQUOT),
    ],
)
def test_plain_os_errors_are_sorted_by_errno(
    exc: OSError, kind: FaultKind, err: int | None
) -> None:
    assert (classify(exc).kind, classify(exc).errno) == (kind, err)


# -- the two policies ----------------------------------------------------------------------


class Clock:
    """A clock that sleeping advances (no real waiting)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def retrier(clock: Clock, events: list[RetryEvent], gauge: ThrottleGauge | None = None) -> Retrier:
    return Retrier(
        RetryPolicy(tries=4, first_delay_s=0.5, max_delay_s=2.0),
        ThrottlePolicy(first_delay_s=1.0, max_delay_s=60.0, patience_s=900.0),
        events.append,
        gauge,
        sleep=clock.sleep,
        clock=clock,
    )


def test_throttling_waits_grow_to_a_minute_and_last_up_to_the_patience() -> None:
    clock, events = Clock(), []
    r = retrier(clock, events)
    slow_down = classify(client_error("SlowDown", 503))
    while r.retry(slow_down, "s3://b/x.tar", "reading", "503 SlowDown"):
        pass
    assert 880 <= clock.now - 1000.0 <= 900  # waited out the patience, no more
    assert max(clock.slept) <= 60.0 and max(clock.slept) >= 30.0
    assert all(0.5 <= s <= 1.0 for s in clock.slept[:1])  # from 1 s (jittered)...
    assert sorted(clock.slept[:6]) == clock.slept[:6]  # ...growing
    assert len(clock.slept) < 40  # minutes, not a retry storm
    assert all(e.throttled and e.tries == 0 for e in events)
    assert "throttl" in str(events[0]) and "retry in" in str(events[0])
    assert r.spent(slow_down).startswith(" after 9") and r.spent(slow_down).endswith("s throttled")


def test_retry_after_is_honoured_and_a_success_ends_the_streak() -> None:
    clock, events = Clock(), []
    r = retrier(clock, events)
    asked = classify(client_error("SlowDown", 503, headers={"retry-after": "40"}))
    assert r.retry(asked, "s3://b/x.tar", "reading", "")
    assert clock.slept == [40.0]
    r.succeeded()
    assert r.retry(classify(client_error("SlowDown", 503)), "s3://b/x.tar", "reading", "")
    assert clock.slept[1] <= 1.0  # a new streak starts from the first delay again


def test_network_failures_keep_their_own_short_policy() -> None:
    clock, events = Clock(), []
    r = retrier(clock, events)
    reset = classify(ConnectionResetError())
    tries = 1
    while r.retry(reset, "s3://b/x.tar", "reading", "ConnectionResetError"):
        tries += 1
    assert tries == 4 and sum(clock.slept) < 5  # 4 tries in seconds, not minutes
    assert [e.failure for e in events] == [1, 2, 3] and not any(e.throttled for e in events)
    assert r.spent(reset) == " after 4 tries"
    for fault in (classify(OSError(errno.ENOSPC, "full")), classify(FileNotFoundError())):
        assert not retrier(clock, events).retry(fault, "s3://b/x", "uploading", "")


def test_the_gauge_tells_one_episode_however_many_calls_and_retries_it_takes() -> None:
    clock, events = Clock(), []
    episodes: list[str] = []
    gauge = ThrottleGauge(on_episode=episodes.append)
    first, second = retrier(clock, events, gauge), retrier(clock, events, gauge)
    slow_down = classify(client_error("SlowDown", 503))
    for _ in range(3):
        first.retry(slow_down, "s3://b/x.tar", "reading", "", offset=512)
        second.retry(slow_down, "s3://b/y.jsonl", "uploading", "")
    assert episodes == ["503 SlowDown reading s3://b/x.tar at byte 512"]
    first.retry(slow_down, "s3://b/x.tar", "reading", "", offset=512)  # sleeps to its retry
    what, retry_in = gauge.state(clock.now - 0.5) or ("", None)
    assert what == episodes[0] and retry_in == pytest.approx(0.5)
    assert gauge.state(clock.now + 10_000) == (what, None)  # the retry is under way
    first.succeeded()
    assert gauge.state(clock.now) is not None  # the other call still waits
    second.succeeded()
    assert gauge.state(clock.now) is None
    first.retry(slow_down, "s3://b/x.tar", "reading", "")
    assert len(episodes) == 2  # a new episode

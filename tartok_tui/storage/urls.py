"""URLs versus local paths, and keeping secrets out of every message.

URLs stay strings end to end: ``Path("s3://b/k")`` is ``s3:/b/k``, which no backend reads.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+://)[^/@]*@")
_SECRET_KEY = re.compile(
    r"secret|token|password|passwd|credential|signature|private|session|^key$|_key$|api_?key",
    re.IGNORECASE,
)
# Secrets that may show up in text whatever their source: presigned URL parameters, HF tokens.
_SECRET_TEXT = [
    re.compile(r"(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s\"']+", re.IGNORECASE),
    re.compile(r"((?:Signature|AWSAccessKeyId|token|sig)=)[^&\s\"']+", re.IGNORECASE),
    re.compile(r"()\bhf_[A-Za-z0-9]{16,}"),
]
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
)
"""Environment variables whose values are secrets."""
REDACTED = "***"


def is_url(location: str | os.PathLike[str]) -> bool:
    """True for ``s3://b/k``, ``gs://...``, ``hf://...``, ``file://...``; False for paths."""
    return isinstance(location, str) and _SCHEME.match(location) is not None


Location = Path | str
"""Where something lives: a local Path, or a URL string (never a Path: see the module doc)."""


def as_location(value: str | os.PathLike[str]) -> Location:
    """A URL as the string given; anything else as a Path (local paths behave as before)."""
    if is_url(value):
        return str(value)
    return Path(value)


def location_name(location: str | os.PathLike[str]) -> str:
    """The last part of a path or URL: ``X.tar`` for ``s3://b/sub/X.tar?sig=...``."""
    if is_url(location):
        return PurePosixPath(str(location).partition("?")[0].rstrip("/")).name
    return Path(location).name


def redact_location(location: str | os.PathLike[str]) -> str:
    """A path as it is; a URL without user info or query string (fit for any message)."""
    return redact_url(str(location)) if is_url(location) else str(location)


def scheme(url: str) -> str:
    """``"s3"`` for ``s3://b/k`` (lower case); ValueError for a path."""
    match = _SCHEME.match(url)
    if match is None:
        raise ValueError(f"not a URL: {url}")
    return match.group(1).lower()


def join(base: str | os.PathLike[str], *parts: str) -> str | os.PathLike[str]:
    """``base/part/...`` for a URL (a string) or a path (a Path-like, as given)."""
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])
    from pathlib import Path

    return Path(base).joinpath(*parts)


def _secret_values(options: Mapping[str, Any] | None) -> list[str]:
    values = [os.environ.get(name, "") for name in SECRET_ENV]

    def walk(mapping: Mapping[str, Any]) -> None:
        for key, value in mapping.items():
            if isinstance(value, Mapping):
                walk(value)
            elif isinstance(value, str) and _SECRET_KEY.search(str(key)):
                values.append(value)

    if options:
        walk(options)
    # Short values would blank out ordinary words.
    return sorted({v for v in values if len(v) >= 6}, key=len, reverse=True)


def redact_text(text: str, options: Mapping[str, Any] | None = None) -> str:
    """``text`` with every secret replaced by ``***``: values of secret-looking storage
    options and environment variables, URL user info, signed-URL parameters, HF tokens."""
    for value in _secret_values(options):
        text = text.replace(value, REDACTED)
    for pattern in _SECRET_TEXT:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def redact_url(url: str) -> str:
    """A URL fit for a log line: no user info, no query string."""
    url = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", url)
    base, sep, _ = url.partition("?")
    return base + (f"?{REDACTED}" if sep else "")


class RedactingFormatter(logging.Formatter):
    """A log formatter that removes secrets (see :func:`redact_text`) from every line,
    tracebacks included."""

    def __init__(self, fmt: str | None = None, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(fmt)
        self._options = dict(options or {})

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record), self._options)

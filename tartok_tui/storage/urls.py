"""URLs versus local paths. URLs stay strings end to end: ``Path("s3://b/k")`` is ``s3:/b/k``."""

from __future__ import annotations

import os
import re

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def is_url(location: str | os.PathLike[str]) -> bool:
    """True for ``s3://b/k``, ``gs://...``, ``hf://...``, ``file://...``; False for paths."""
    return isinstance(location, str) and _SCHEME.match(location) is not None


def scheme(url: str) -> str:
    """``"s3"`` for ``s3://b/k`` (lower case); ValueError for a path."""
    match = _SCHEME.match(url)
    if match is None:
        raise ValueError(f"not a URL: {url}")
    return match.group(1).lower()

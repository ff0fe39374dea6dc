"""The files under a URL prefix (discovery of shards on object storage)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tartok_tui.storage.errors import FaultKind, InputUnavailable, classify
from tartok_tui.storage.filesystems import filesystem
from tartok_tui.storage.reading import Access
from tartok_tui.storage.urls import redact_text, redact_url

_MISSING = (FileNotFoundError, NotADirectoryError)


def _retrying(call: Callable[[], Any], url: str, access: Access) -> Any:
    retrier = access.retrier()
    while True:
        try:
            result = call()
        except _MISSING:
            retrier.succeeded()
            raise
        except Exception as exc:
            fault = classify(exc)
            error = redact_text(f"{type(exc).__name__}: {exc}", access.options)
            if fault.kind in (FaultKind.THROTTLED, FaultKind.TRANSIENT) and retrier.retry(
                fault, redact_url(url), "listing", error
            ):
                continue
            raise InputUnavailable(
                f"cannot list {redact_url(url)}{retrier.spent(fault)}: {error}"
            ) from exc
        retrier.succeeded()
        return result


def list_files(
    url: str, *, recursive: bool, access: Access | None = None
) -> dict[str, dict[str, Any]]:
    """The files under ``url``: path relative to it (``sub/x.tar``) -> the listing's entry
    (``size``, and ``ETag`` or ``etag`` where the store gives one), unsorted. Only the top
    level unless ``recursive``. FileNotFoundError when nothing is there; listing failures
    are retried, then InputUnavailable."""
    access = access or Access()
    fs, root = filesystem(url, access.options)
    root = root.rstrip("/")

    def listing() -> list[dict[str, Any]]:
        fs.invalidate_cache(root)  # what is there now, not what this process saw before
        if recursive:
            found = fs.find(root, withdirs=False, detail=True)
            if not found and not fs.exists(root):
                raise FileNotFoundError(root)
            return list(found.values())
        return [e for e in fs.ls(root, detail=True) if e.get("type") == "file"]

    entries = _retrying(listing, url, access)
    prefix = root + "/"
    return {e["name"][len(prefix) :]: e for e in entries if e["name"].startswith(prefix)}

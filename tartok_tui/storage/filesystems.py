"""The fsspec filesystem for a URL, with the standard credentials and one instance per setup.

Credentials come the standard way for each store, read by its own library: AWS environment
variables, profiles and instance roles (``AWS_ENDPOINT_URL`` for S3-compatible stores) for
``s3://``; ``GOOGLE_APPLICATION_CREDENTIALS`` or the machine's Google credentials for
``gs://``; ``HF_TOKEN`` for ``hf://``. ``storage_options`` (``--storage-options``) adds or
overrides anything else. Nothing here logs an option or a credential.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any

from tartok_tui.storage.errors import BackendMissing, StorageError
from tartok_tui.storage.urls import redact_text, redact_url, scheme

# scheme -> (package that reads it, how to install it)
BACKENDS = {
    "s3": ("s3fs", "pip install 'tartok-tui[s3]'"),
    "s3a": ("s3fs", "pip install 'tartok-tui[s3]'"),
    "gs": ("gcsfs", "pip install 'tartok-tui[gcs]'"),
    "gcs": ("gcsfs", "pip install 'tartok-tui[gcs]'"),
    "hf": ("huggingface_hub", "pip install huggingface_hub"),
}
# A filesystem is reused while these are unchanged (the libraries read them when it is made).
_SETUP_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "HF_TOKEN",
    "HF_ENDPOINT",
)

_lock = threading.Lock()
_cache: dict[tuple, Any] = {}


def _options_for(protocol: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    options = dict(storage_options or {})
    if protocol in ("s3", "s3a") and "endpoint_url" not in options:
        # Newer botocore reads these itself; saying it keeps older ones on the same endpoint.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
    return options


def filesystem_class(protocol: str) -> type:
    """The fsspec class for a scheme; BackendMissing naming the extra when not installed."""
    import fsspec

    try:
        return fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        package, install = BACKENDS.get(protocol, (None, None))
        if install is None:
            raise BackendMissing(
                f"{protocol}:// URLs need a package that is missing: {exc}"
            ) from exc
        raise BackendMissing(
            f"{protocol}:// URLs need {package}, which is not installed: {install}"
        ) from exc
    except ValueError as exc:
        raise StorageError(f"unknown URL scheme {protocol}://") from exc


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for a URL. One filesystem per scheme, options and
    credential environment in this process, so connections are reused across tars."""
    protocol = scheme(url)
    cls = filesystem_class(protocol)
    options = _options_for(protocol, storage_options)
    key = (
        protocol,
        json.dumps(options, sort_keys=True, default=repr),
        tuple(os.environ.get(name) for name in _SETUP_ENV),
    )
    with _lock:
        fs = _cache.get(key)
        if fs is None:
            try:
                # fsspec's own instance cache ignores the environment; ours does not.
                fs = cls(skip_instance_cache=True, **options)
            except Exception as exc:
                raise StorageError(
                    f"cannot set up storage for {redact_url(url)}: "
                    f"{redact_text(f'{type(exc).__name__}: {exc}', options)}"
                ) from exc
            _cache[key] = fs
    return fs, fs._strip_protocol(url)

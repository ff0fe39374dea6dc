"""Where inputs live: local paths and object-storage URLs (``s3://``, ``gs://``, ``hf://``).

URLs stay strings end to end (``pathlib.Path`` collapses ``s3://b`` to ``s3:/b``); local
paths keep their exact old behaviour. See :mod:`tartok_tui.storage.reading` for how reads
are retried, :mod:`tartok_tui.storage.filesystems` for credentials, and
:mod:`tartok_tui.storage.urls` for keeping secrets out of messages.
"""

from tartok_tui.storage.errors import (
    EXHAUSTED_ERRNOS,
    BackendMissing,
    Fault,
    FaultKind,
    InputUnavailable,
    StorageError,
    classify,
    is_credentials_error,
)
from tartok_tui.storage.filesystems import BACKENDS, filesystem, filesystem_class
from tartok_tui.storage.listing import list_files
from tartok_tui.storage.reading import (
    DEFAULT_READ_AHEAD,
    Access,
    LocalInput,
    RemoteInput,
    open_input,
)
from tartok_tui.storage.retrying import (
    Retrier,
    RetryEvent,
    RetryPolicy,
    ThrottleGauge,
    ThrottlePolicy,
)
from tartok_tui.storage.urls import (
    Location,
    RedactingFormatter,
    as_location,
    is_url,
    join,
    location_name,
    redact_location,
    redact_text,
    redact_url,
    scheme,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_READ_AHEAD",
    "EXHAUSTED_ERRNOS",
    "Access",
    "BackendMissing",
    "Fault",
    "FaultKind",
    "InputUnavailable",
    "LocalInput",
    "Location",
    "RedactingFormatter",
    "RemoteInput",
    "Retrier",
    "RetryEvent",
    "RetryPolicy",
    "StorageError",
    "ThrottleGauge",
    "ThrottlePolicy",
    "as_location",
    "classify",
    "filesystem",
    "filesystem_class",
    "is_credentials_error",
    "is_url",
    "join",
    "list_files",
    "location_name",
    "open_input",
    "redact_location",
    "redact_text",
    "redact_url",
    "scheme",
]

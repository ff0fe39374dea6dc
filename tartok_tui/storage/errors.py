"""Errors of the storage layer: an input that cannot be read is never a damaged input."""

from __future__ import annotations

import re

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

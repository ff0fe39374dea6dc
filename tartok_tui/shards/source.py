"""A tar's bytes: opened from a local path or a URL, decompressed to a spool file when needed.

Read errors of the underlying file become InputUnavailable, so that a failing disk or network
is never taken for a damaged tar; errors of the decompressors stay what they are (damage).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import tempfile
import zlib
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from tartok_tui.storage.errors import InputUnavailable
from tartok_tui.storage.urls import is_url

_MAGIC = {b"\x1f\x8b": "gz", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}
_DECOMPRESSORS: dict[str, Callable[[BinaryIO], BinaryIO]] = {
    "gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    "bz2": lambda raw: bz2.BZ2File(raw, mode="rb"),
    "xz": lambda raw: lzma.LZMAFile(raw, mode="rb"),  # noqa: SIM115 - used in a with
}
_SPOOL_CHUNK = 1 << 20


class LocalInput:
    """A local file opened for reading whose read errors are InputUnavailable."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.name = os.fspath(path)
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.size = os.fstat(self._file.fileno()).st_size

    def _unavailable(self, exc: OSError) -> InputUnavailable:
        return InputUnavailable(f"cannot read {self.name}: {exc}")

    def read(self, size: int = -1) -> bytes:
        try:
            return self._file.read(size)
        except OSError as exc:
            raise self._unavailable(exc) from exc

    def readinto(self, buffer) -> int:
        try:
            return self._file.readinto(buffer)
        except OSError as exc:
            raise self._unavailable(exc) from exc

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        try:
            return self._file.seek(offset, whence)
        except OSError as exc:
            raise self._unavailable(exc) from exc

    def tell(self) -> int:
        return self._file.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def __enter__(self) -> LocalInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_input(
    location: str | os.PathLike[str],
    *,
    sequential: bool,
    storage_options: Mapping[str, Any] | None = None,
) -> BinaryIO:
    """The raw bytes of a tar, seekable. ``sequential``: it will be read front to back (a
    remote input then reads ahead). Opening errors (a missing file) raise as they are."""
    if is_url(location):
        from tartok_tui.storage import open_input as open_remote

        return open_remote(
            os.fspath(location), storage_options=storage_options, sequential=sequential
        )
    return LocalInput(location)  # type: ignore[return-value]


def compression(raw: BinaryIO) -> str | None:
    """ "gz", "bz2", "xz" or None (plain), from the first bytes; leaves ``raw`` at 0."""
    head = raw.read(6)
    raw.seek(0)
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def spool(raw: BinaryIO, kind: str, directory: str | None = None) -> tuple[BinaryIO, str | None]:
    """Decompress ``raw`` into an anonymous temporary file (removed when closed).

    Returns (spool at offset 0, None), or the part that decompressed and why it stopped:
    a damaged stream still yields the samples before the damage. A failing write (a full
    disk) raises: it says nothing about the tar.
    """
    out = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - the caller closes it
    error: str | None = None
    try:
        with _DECOMPRESSORS[kind](raw) as stream:
            while True:
                try:
                    # read1: one decompression step, so the data before damage is kept
                    # (read() drops what it had gathered when a later step fails).
                    chunk = stream.read1(_SPOOL_CHUNK)
                except InputUnavailable:
                    raise
                except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
                    error = f"{kind} stream damaged: {exc}"
                    break
                if not chunk:
                    break
                out.write(chunk)
        out.seek(0)
    except BaseException:
        out.close()
        raise
    return out, error

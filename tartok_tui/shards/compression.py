"""Compressed tars: told by their first bytes, decompressed into a spool file for seeking.

Read errors of the input (InputUnavailable) pass through; errors of the decompressor are the
tar's damage; a failing write to the spool is neither and raises as it is.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tempfile
import zlib
from collections.abc import Callable
from typing import BinaryIO

from tartok_tui.shards.tario import ByteSource
from tartok_tui.storage.errors import InputUnavailable

_MAGIC = {b"\x1f\x8b": "gz", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}
_DECOMPRESSORS: dict[str, Callable[[ByteSource], io.BufferedIOBase]] = {
    "gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    "bz2": lambda raw: bz2.BZ2File(raw, mode="rb"),
    # lzma's stubs want an IO[bytes]; LZMAFile only reads and seeks it.
    "xz": lambda raw: lzma.LZMAFile(raw, mode="rb"),  # type: ignore[arg-type]  # noqa: SIM115 - used in a with
}
_SPOOL_CHUNK = 1 << 20


def compression(raw: ByteSource) -> str | None:
    """The compression of a tar from its first bytes: "gz", "bz2", "xz", or None for a
    plain tar. Leaves ``raw`` at offset 0."""
    head = raw.read(6)
    raw.seek(0)
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def spool(raw: ByteSource, kind: str, directory: str | None = None) -> tuple[BinaryIO, str | None]:
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

"""Member headers of a tar, read with the standard library, with damage told apart from the end.

The tar reader's building blocks: open a tar as a stream (``r|*``, any compression tarfile
knows) or as a seekable file (``r:``, headers read by seeking over the data), walk its member
headers, and read a member's data in bounded chunks. Nothing here allocates what a header
claims: extended headers are capped, and data is read a chunk at a time, so a member that
claims gigabytes in a truncated tar ends in damage after reading what is really there.
"""

from __future__ import annotations

import lzma
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Protocol, Self

from tartok_tui.storage.errors import InputUnavailable

DAMAGE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)
"""What a damaged or foreign file can raise from inside tarfile and its decompressors. OSError
covers bz2 and gzip stream errors; ValueError covers undecodable names. InputUnavailable is an
OSError too, and must be re-raised first (see :func:`is_damage`)."""
MAX_EXTENDED_HEADER = 1 << 20
"""A PAX or GNU long-name header larger than this is damage: a path is at most a few KiB."""
CHUNK = 1 << 20
"""Member data is read this many bytes at a time."""
_EXTENDED_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


class ByteSource(Protocol):
    """A readable, seekable file of bytes: an input (local or remote) or a decompressed spool."""

    def read(self, size: int = -1, /) -> bytes: ...
    def seek(self, offset: int, whence: int = 0, /) -> int: ...
    def seekable(self) -> bool: ...
    def tell(self) -> int: ...
    def close(self) -> None: ...


def is_damage(exc: BaseException) -> bool:
    """True for what a damaged tar raises; False for an unreadable input (never damage)."""
    return isinstance(exc, DAMAGE_ERRORS) and not isinstance(exc, InputUnavailable)


class _RecordingTarInfo(tarfile.TarInfo):
    """TarInfo that leaves the last header error on the TarFile, and caps extended headers.

    ``TarFile.next()`` turns a missing, truncated or corrupt header after the
    first member into a silent end of iteration, exactly like a proper
    end-of-archive block. Recording the error is the only way to tell the two
    apart without re-parsing headers ourselves.
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
        tarfile_.tartok_header_error = None  # type: ignore[attr-defined]
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as exc:
            tarfile_.tartok_header_error = exc  # type: ignore[attr-defined]
            raise

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        # tarfile reads an extended header whole, at the size its header claims.
        if self.type in _EXTENDED_TYPES and self.size > MAX_EXTENDED_HEADER:
            # tarfile's header error subclasses are not in its stubs (here and below).
            raise tarfile.SubsequentHeaderError(  # type: ignore[attr-defined]
                f"extended header of {self.size} bytes at offset {self.offset}"
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc]  # private, not in the stubs


def open_stream(raw: ByteSource) -> tarfile.TarFile:
    """A tar read front to back (plain or compressed); raises DAMAGE_ERRORS on a non-tar."""
    # tarfile's stubs want a fileobj with write() whatever the mode; reading never calls it.
    return tarfile.open(fileobj=raw, mode="r|*", tarinfo=_RecordingTarInfo)  # type: ignore[call-overload]


def open_seekable(raw: ByteSource) -> tarfile.TarFile:
    """An uncompressed tar whose headers are reached by seeking over member data."""
    # (write() as in open_stream)
    return tarfile.open(fileobj=raw, mode="r:", tarinfo=_RecordingTarInfo)  # type: ignore[call-overload]


def _end_damage(tf: tarfile.TarFile) -> str | None:
    """Why the member iteration stopped, or None when it met the end-of-archive block."""
    error = getattr(tf, "tartok_header_error", None)
    if error is None or isinstance(error, tarfile.EOFHeaderError):  # type: ignore[attr-defined]
        return None
    if isinstance(error, tarfile.EmptyHeaderError):  # type: ignore[attr-defined]
        return "unexpected end of file (no end-of-archive marker)"
    return f"corrupt header: {error}"


@dataclass(frozen=True)
class End:
    """The last item of :func:`iter_headers`: ``damage`` None means a clean end."""

    damage: str | None


def iter_headers(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo | End]:
    """Every member header, then End. Raises InputUnavailable; never raises for damage."""
    while True:
        try:
            member = tf.next()
        except Exception as exc:
            if not is_damage(exc):
                raise
            yield End(f"truncated or corrupt tar: {exc}")
            return
        # tarfile keeps every member it has seen; a tar holds ~50k members and we never
        # look back, so drop them to keep memory flat. (`members` is missing from the stubs.)
        tf.members.clear()  # type: ignore[attr-defined]
        if member is None:
            yield End(_end_damage(tf))
            return
        yield member


def read_exactly(fileobj: IO[bytes], size: int) -> bytes:
    """``size`` bytes a chunk at a time; EOFError if fewer are there. Only what is really
    there is ever held, whatever ``size`` claims."""
    chunks = []
    left = size
    while left > 0:
        chunk = fileobj.read(min(CHUNK, left))
        if not chunk:
            raise EOFError(f"unexpected end of data ({size - left} of {size} bytes)")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_member(tf: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A regular member's data, read in chunks (raises DAMAGE_ERRORS on truncation)."""
    fileobj = tf.extractfile(member)
    if fileobj is None:
        return b""
    return read_exactly(fileobj, member.size)

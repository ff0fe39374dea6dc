"""Where a tar's files are written first and published after: the local filesystem.

The writer sees a target through four calls: ``open_partial`` (a file to write
the future ``OUTPUT/<key>`` into), ``publish`` (make it ``OUTPUT/<key>``, durably
and atomically), ``remove`` and ``exists`` (of a published key). Keys are paths
relative to the output directory (``sub/X.parquet``, ``errors/sub/X.jsonl``), so
a target for object storage can spool partial files on local disk and publish
each with one upload. ``LocalTarget`` keeps every local-filesystem specific here:
the ``.partial/`` directory, fsync of data, atomic rename, fsync of the directory.

A full or read-only output is not the tar's fault: every OSError with ENOSPC,
EDQUOT or EROFS (``storage.EXHAUSTED_ERRNOS``) becomes ``OutputUnavailable``, naming
the path and what was being done.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Protocol

from tartok_tui.output.paths import partial_path
from tartok_tui.storage.errors import EXHAUSTED_ERRNOS, Fault, FaultKind

WRITE_BUFFER = 1 << 20
"""Bytes a partial file collects before writing them out."""


class OutputUnavailable(OSError):
    """The output cannot take more data (no space, quota exceeded or read-only).

    ``errno`` and ``filename`` are set as for any OSError; ``action`` says what was
    being done ("writing", "syncing", "renaming into place", ...); ``cleanup`` what
    happened to the partial files after it (empty when not known yet); ``reason``, when
    given, replaces the errno's text (an object store's own words for what is full).
    """

    def __init__(
        self, err: int, path: Path | str, action: str, cleanup: str = "", reason: str = ""
    ) -> None:
        super().__init__(err, reason or EXHAUSTED_ERRNOS.get(err, os.strerror(err)), str(path))
        self.action = action
        self.cleanup = cleanup
        self.reason = reason

    @property
    def fault(self) -> Fault:
        """Already classified: the output takes no more (see ``storage.classify``)."""
        return Fault(FaultKind.EXHAUSTED, errno=self.errno)

    @property
    def errno_name(self) -> str:
        return errno.errorcode.get(self.errno or 0, str(self.errno))

    def __str__(self) -> str:
        text = f"output unavailable: {self.strerror} ({self.errno_name}) while {self.action} {self.filename}"
        return f"{text}; {self.cleanup}" if self.cleanup else text

    def __reduce__(self) -> tuple[object, ...]:
        # OSError pickles by its args; keep the extra fields across processes.
        return (type(self), (self.errno, self.filename, self.action, self.cleanup, self.reason))


@contextlib.contextmanager
def output_op(path: Path | str, action: str) -> Iterator[None]:
    """Turn an OSError meaning "the output is full or read-only" into OutputUnavailable."""
    try:
        yield
    except OutputUnavailable:
        raise
    except OSError as exc:
        if exc.errno in EXHAUSTED_ERRNOS:
            raise OutputUnavailable(exc.errno, path, action) from exc
        raise


def fsync_dir(path: Path) -> None:
    """Persist a directory entry change (a rename or unlink) in ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OutputTarget(Protocol):
    """What a TarWriter needs from where its files go (see the module doc)."""

    def open_partial(self, key: PurePosixPath, suffix: str) -> PartialFile: ...
    def publish(self, part: PartialFile) -> None: ...
    def remove(self, key: PurePosixPath) -> None: ...
    def exists(self, key: PurePosixPath) -> bool: ...
    def discard(self, part: PartialFile) -> None: ...


class PartialFile:
    """A file being written for a target: buffered here, so every byte reaches the
    disk through the target's ``_write`` (and a full disk shows at a known call)."""

    def __init__(self, target: LocalTarget, key: PurePosixPath, path: Path, fd: int) -> None:
        self.target = target
        self.key = key
        self.path = path
        self._fd: int | None = fd
        self._buffer = bytearray()
        self._size = 0
        self.synced = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; the file-like call pyarrow and the writer use."""
        if self._fd is None:
            raise ValueError(f"{self.path}: write to a closed partial file")
        self._buffer += data
        self._size += len(data)
        self.synced = False
        if len(self._buffer) >= WRITE_BUFFER:
            self.flush()
        return len(data)

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        if self._fd is None or not self._buffer:
            return
        view = memoryview(self._buffer)
        try:
            with output_op(self.path, "writing"):
                while view:
                    view = view[self.target._write(self._fd, view) :]
        finally:
            view.release()
        self._buffer = bytearray()

    def touch(self) -> None:
        """Set the file's modification time to now (the file server's clock on NFS): its
        age tells a sweeper whether a writer still holds it (see paths.PARTIAL_MAX_AGE_S)."""
        if self._fd is not None:
            with output_op(self.path, "touching"):
                self.target._touch(self._fd)

    def sync(self) -> None:
        """Everything written so far is on disk."""
        self.flush()
        if self._fd is not None and not self.synced:
            with output_op(self.path, "syncing"):
                self.target._fsync(self._fd)
        self.synced = True

    @property
    def closed(self) -> bool:
        return self._fd is None

    def close(self) -> None:
        """Close the descriptor; unwritten buffered data is dropped (``sync`` first to keep it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self._buffer = bytearray()
            os.close(fd)


class LocalTarget:
    """Partial files under ``OUTPUT/.partial/``, published by fsync + atomic rename + fsync
    of the directory. The ``_open``/``_write``/``_fsync``/``_touch``/``_replace``/``_unlink``/
    ``_mkdir`` seams are the only calls that change the disk, so a test can make them fail like
    a full disk."""

    def __init__(self, output_dir: Path | str) -> None:
        self.output_dir = Path(output_dir)

    def final_path(self, key: PurePosixPath) -> Path:
        return self.output_dir / key

    def exists(self, key: PurePosixPath) -> bool:
        return self.final_path(key).exists()

    def open_partial(self, key: PurePosixPath, suffix: str) -> PartialFile:
        """A new, empty file that ``publish`` will turn into ``OUTPUT/key``."""
        path = partial_path(self.output_dir, key, suffix)
        with output_op(path, "creating"):
            self._mkdir(path.parent)
            fd = self._open(path)
        return PartialFile(self, key, path, fd)

    def publish(self, part: PartialFile) -> None:
        """Make ``part`` the file ``OUTPUT/<part.key>``: durable data first, then one rename."""
        part.sync()
        part.close()
        final = self.final_path(part.key)
        with output_op(final, "renaming into place"):
            self._mkdir(final.parent)
            self._replace(part.path, final)
            self._sync_dir(final.parent)

    def remove(self, key: PurePosixPath) -> None:
        """Delete the published ``OUTPUT/key`` if it exists."""
        final = self.final_path(key)
        with output_op(final, "removing"):
            if final.exists():
                self._unlink(final)
                self._sync_dir(final.parent)

    def discard(self, part: PartialFile) -> None:
        """Close and delete a partial file (it may already be gone)."""
        part.close()
        with contextlib.suppress(FileNotFoundError):
            self._unlink(part.path)

    # The calls below are the only ones that write: tests override them.

    def _open(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)

    def _write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def _fsync(self, fd: int) -> None:
        os.fsync(fd)

    def _touch(self, fd: int) -> None:
        os.utime(fd)

    def _sync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    def _replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def _unlink(self, path: Path) -> None:
        path.unlink()

    def _mkdir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)

"""Where an export goes: a local directory or an object-storage prefix, written file by file.

Files are written through the output's own targets (``output.target``, ``output.spool``):
locally a partial file under ``DEST/.partial/`` made durable and renamed into place (fsync,
rename, fsync of the directory); on a store a spool file uploaded as one object. Nothing
half-written is ever visible under its final name.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path, PurePosixPath

from tartok_tui.output.paths import PARTIAL_DIR, partial_suffix, remove_stale_partials
from tartok_tui.output.target import LocalTarget, OutputTarget, PartialFile
from tartok_tui.storage import Access, Location, is_url, redact_location


class Destination:
    """The files of an export, by key relative to its root (``data/sub/X.parquet``)."""

    def __init__(
        self, location: Location, access: Access | None = None, spool_dir: Path | None = None
    ) -> None:
        self.location = location
        self.name = redact_location(location)
        self.suffix = partial_suffix("export")
        self.target: OutputTarget
        if is_url(location):
            from tartok_tui.output.spool import SpoolTarget, make_spool, spool_root
            from tartok_tui.output.store import StoreOutput

            self.store: StoreOutput | None = StoreOutput(str(location), access)
            self.spool = make_spool(spool_root(spool_dir, str(location)))
            self.target = SpoolTarget(self.store, self.spool)
        else:
            self.store = None
            self.spool = Path(location)
            self.target = LocalTarget(Path(location))

    def sweep(self) -> None:
        """Remove partial files left by dead exports of this machine."""
        remove_stale_partials(self.spool)

    def keys_under(self, prefix: PurePosixPath) -> list[PurePosixPath]:
        """Every file under ``prefix`` (one listing on a store), relative to the root."""
        if self.store is not None:
            return sorted(
                k for k in self.store.list_keys() if k.parts[: len(prefix.parts)] == prefix.parts
            )
        root = Path(self.location)
        base = root / prefix
        found = [p for p in base.rglob("*") if p.is_file()] if base.is_dir() else []
        return sorted(PurePosixPath(p.relative_to(root).as_posix()) for p in found)

    def read(self, key: PurePosixPath) -> bytes | None:
        """A small file's bytes, None when it does not exist."""
        if self.store is not None:
            return self.store.read_bytes(key) if self.store.exists(key) else None
        try:
            return (Path(self.location) / key).read_bytes()
        except FileNotFoundError:
            return None

    def open(self, key: PurePosixPath) -> PartialFile:
        """A new partial file that ``publish`` turns into ``key``."""
        return self.target.open_partial(key, self.suffix)

    def publish(self, part: PartialFile) -> None:
        self.target.publish(part)

    def discard(self, part: PartialFile) -> None:
        self.target.discard(part)

    def write(self, key: PurePosixPath, data: bytes) -> None:
        """Make ``key`` hold ``data``, whole or not at all."""
        part = self.open(key)
        try:
            part.write(data)
            self.publish(part)
        except BaseException:
            self.discard(part)
            raise

    def remove(self, key: PurePosixPath) -> None:
        self.target.remove(key)

    def tidy(self) -> None:
        """Remove the empty folders a finished local export leaves under ``.partial/``."""
        if self.store is not None:
            return
        partial = Path(self.location) / PARTIAL_DIR
        for dirpath, _, _ in sorted(os.walk(partial), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):  # not empty: a concurrent export's files
                os.rmdir(dirpath)

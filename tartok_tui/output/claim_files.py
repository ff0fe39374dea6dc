"""The claims of a local output directory, and the interface every place claims live offers.

A claim store keeps small named records and changes them in three steps that are each
atomic against every other writer: create if absent, replace if unchanged, delete if
unchanged. "Unchanged" is a token read with the record: a digest of its bytes here, the
ETag on S3. That compare-and-swap is all ``output.claim`` builds on.

Locally (``OUTPUT/.claims/NAME``):

- create: ``O_CREAT | O_EXCL``; the bytes follow at once (a reader seeing the file still
  empty waits: ``claim.BROKEN_GRACE_S``);
- replace and delete: first the writer creates ``NAME.cas-<token>-<n>`` with ``O_EXCL``, so
  one writer at a time acts on a given token; it then checks the record still has that
  token and renames the new bytes over it (or deletes it). A marker whose writer is gone
  (its process ended on this machine, or it is older than ``MARKER_STALE_S``: a swap takes
  milliseconds) is stepped over by creating the next ``n``, never removed while others
  may still race for it, so two racers never both win. The markers of a token are removed
  once the token is no longer current: nobody can win it again.

Both are atomic on local file systems and on NFS (exclusive create and rename are single
server operations).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tartok_tui.output.owner import Owner
from tartok_tui.output.paths import CLAIMS_DIR

CLAIM_SUFFIX = ".json"
MARKER_STALE_S = 60.0
"""A swap marker this old belongs to a writer that stopped mid-swap."""
MAX_MARKERS = 32
"""Markers stepped over for one token before giving up (each means a writer died mid-swap)."""


@dataclass(frozen=True)
class Found:
    """A record as read, with the token that a replace or delete must name."""

    data: bytes
    token: str
    age_s: float | None
    """Seconds since it was last written, by the store's clock (None: unknown)."""


class ClaimStore(Protocol):
    """Where an output's claims live (see the module doc)."""

    where: str
    """The output, for messages."""
    heartbeat_s: float
    """How often a holder refreshes its claim here."""
    stale_after_s: float
    """A claim not refreshed for this long belongs to a run that is gone."""

    def names(self) -> list[str]:
        """Every claim's name."""
        ...

    def create(self, name: str, data: bytes) -> str | None:
        """Write a new claim; its token, or None when one exists already."""
        ...

    def read(self, name: str) -> Found | None:
        """The claim, or None when there is none."""
        ...

    def replace(self, name: str, data: bytes, token: str) -> str | None:
        """Rewrite the claim if it still has ``token``; the new token, or None."""
        ...

    def delete(self, name: str, token: str) -> bool:
        """Remove the claim if it still has ``token``; whether it did."""
        ...


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data``; False when it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


class LocalClaims:
    """The claims of a local output directory (``OUTPUT/.claims``)."""

    heartbeat_s = 30.0
    stale_after_s = 300.0

    def __init__(self, output_dir: Path) -> None:
        self.root = Path(output_dir) / CLAIMS_DIR
        self.where = str(output_dir)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.name.endswith(CLAIM_SUFFIX))

    def create(self, name: str, data: bytes) -> str | None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not _create_exclusive(self.root / name, data):
            return None
        _fsync_dir(self.root)
        return digest(data)

    def read(self, name: str) -> Found | None:
        path = self.root / name
        try:
            data = path.read_bytes()
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        return Found(data, digest(data), max(age, 0.0))

    def replace(self, name: str, data: bytes, token: str) -> str | None:
        with self._swap(name, token) as mine:
            if not mine:
                return None
            path = self.root / name
            temp = self.root / f"{name}.tmp-{uuid.uuid4().hex}"
            _create_exclusive(temp, data)
            try:
                os.replace(temp, path)
            finally:
                temp.unlink(missing_ok=True)
            _fsync_dir(self.root)
            return digest(data)

    def delete(self, name: str, token: str) -> bool:
        with self._swap(name, token) as mine:
            if not mine:
                return False
            (self.root / name).unlink()
            _fsync_dir(self.root)
            return True

    @contextlib.contextmanager
    def _swap(self, name: str, token: str) -> Iterator[bool]:
        """True when this writer alone may act on the claim ``name`` at ``token`` (it won
        the token's marker and the claim still has that token)."""
        prefix = f"{name}.cas-{token}-"
        mark = json.dumps(Owner.me().to_dict()).encode()
        for n in range(MAX_MARKERS):
            if _create_exclusive(self.root / f"{prefix}{n}", mark):
                break
            if self._marker_live(self.root / f"{prefix}{n}"):
                yield False
                return
        else:
            yield False
            return
        try:
            found = self.read(name)
            yield found is not None and found.token == token
        finally:
            # The token is no longer current (changed by us, or it already was): its
            # markers can never be won again.
            for marker in self.root.glob(f"{prefix}*"):
                marker.unlink(missing_ok=True)

    @staticmethod
    def _marker_live(path: Path) -> bool:
        try:
            data = path.read_bytes()
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return False  # its writer finished: the token has moved on
        if age > MARKER_STALE_S:
            return False
        try:
            owner = Owner.from_dict(json.loads(data))
        except (ValueError, KeyError, TypeError):
            return True  # being written
        return not owner.process_gone()

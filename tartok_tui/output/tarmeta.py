"""A tar's commit record: what made its output and what its input was.

``OUTPUT/meta/sub/X.json`` is written by the worker at commit, after the errors file and
before the tokens file (whose existence still means "done"), so every done tar written by
this version has one. It holds:

- ``fingerprint``: the run manifest's fingerprint (``output.manifest``): which codec,
  weights, precision and token-changing options made the tokens;
- ``keys``: the input's sample keys in tar order, from the worker's own header scan
  (``keys_source`` "scan"), or, where the tar was read as one stream (object storage), from
  the members the reader met ("stream");
- ``input``: the input's size and ETag or mtime when the lease started.

``verify`` compares an output with the recorded keys and the input's identity from one
listing, instead of reading every input tar again. A crash between this file and the
tokens file leaves a record without tokens: the tar is not done and its next commit
replaces the record.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from tartok_tui.output.paths import META_DIR, TarOutputPaths
from tartok_tui.shards.discover import output_stem
from tartok_tui.storage import Access, Location, is_url
from tartok_tui.storage.filesystems import filesystem

VERSION = 1
META_SUFFIX = ".json"
KEY_SOURCES = ("scan", "stream")


@dataclass(frozen=True)
class InputIdentity:
    """What says an input tar is the one that was tokenized: its size and ETag (object
    storage) or modification time (a local file)."""

    size: int
    etag: str | None = None
    mtime_ns: int | None = None

    def differs(self, other: InputIdentity) -> str | None:
        """Why ``other`` (the input now) is not this input, or None."""
        if other.size != self.size:
            return f"size {self.size} -> {other.size}"
        if self.etag is not None and other.etag is not None and other.etag != self.etag:
            return f"ETag {self.etag} -> {other.etag}"
        if self.mtime_ns is not None and other.mtime_ns not in (None, self.mtime_ns):
            return "modified since it was tokenized"
        return None


def identity_of(info: dict[str, Any]) -> InputIdentity:
    """An InputIdentity from a local ``os.stat`` turned dict or an fsspec ``info``/listing
    entry (``size``, and ``ETag`` / ``etag`` where the store gives one)."""
    etag = info.get("ETag", info.get("etag"))
    mtime = info.get("mtime_ns")
    return InputIdentity(
        size=int(info["size"]),
        etag=str(etag).strip('"') if etag else None,
        mtime_ns=int(mtime) if mtime is not None else None,
    )


def input_identity(location: Location, access: Access | None = None) -> InputIdentity:
    """The identity of one input tar now (a stat, or one HEAD request)."""
    if not is_url(location):
        st = os.stat(location)
        return InputIdentity(size=st.st_size, mtime_ns=st.st_mtime_ns)
    fs, path = filesystem(str(location), (access or Access()).options)
    return identity_of(fs.info(path))


@dataclass(frozen=True)
class TarMeta:
    """One tar's commit record (see the module doc)."""

    tar: str
    fingerprint: str
    format: str
    samples: int
    records: int
    errors: int
    keys: list[str] = field(default_factory=list)
    keys_source: str = "scan"
    input: InputIdentity | None = None
    version: int = VERSION

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["input"] = asdict(self.input) if self.input is not None else None
        ordered = {"version": data.pop("version"), **data}
        return (json.dumps(ordered, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TarMeta:
        """Raises ValueError for anything that is not a commit record this version reads."""
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a commit record: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("version"), int):
            raise ValueError("not a commit record: no version")
        if raw["version"] > VERSION:
            raise ValueError(
                f"commit record version {raw['version']} is newer than this tool's ({VERSION})"
            )
        try:
            identity = raw.get("input")
            keys = raw.get("keys", [])
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise ValueError("keys is not a list of strings")
            return cls(
                tar=str(raw["tar"]),
                fingerprint=str(raw["fingerprint"]),
                format=str(raw["format"]),
                samples=int(raw["samples"]),
                records=int(raw["records"]),
                errors=int(raw["errors"]),
                keys=keys,
                keys_source=str(raw.get("keys_source", "scan")),
                input=InputIdentity(**identity) if isinstance(identity, dict) else None,
                version=int(raw["version"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a commit record: {exc}") from None


def rel_meta(paths: TarOutputPaths) -> PurePosixPath:
    """``meta/sub/X.json`` for the tar of ``paths``."""
    stem = output_stem(paths.rel_tar)
    return PurePosixPath(META_DIR) / stem.with_name(stem.name + META_SUFFIX)

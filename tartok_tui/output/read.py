"""Reading a tar's output back, in either format: rows, keys, counts, error records.

``read_rows`` gives the records of a tokens file as dicts (JSONL lines as
written; Parquet rows with every column, null where a sample lacked a field,
JSON-text columns decoded). ``read_keys`` and ``count_records`` back ``verify``
and ``status`` without decoding the token lists.

Every function takes a local path or a URL (read through ``storage.open_input``:
streamed with read-ahead, a Parquet file by ranges, failed reads retried; ``access``
says how).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow as pa

from tartok_tui.output.parquet import parquet_row_count, read_parquet_keys, read_parquet_rows
from tartok_tui.output.paths import format_of
from tartok_tui.storage import Access, Location, as_location, is_url, location_name, open_input

_CHUNK = 1 << 20

_KEY_PREFIX = b'{"key": '
_DECODER = json.JSONDecoder()


class UnreadableOutput(Exception):
    """A tokens file that cannot be read at all (a Parquet file with a broken footer)."""


def _format(path: Location) -> str:
    output_format = format_of(location_name(path))
    if output_format is None:
        raise ValueError(f"{path}: not a tokens file (expected .jsonl or .parquet)")
    return output_format


@contextlib.contextmanager
def _open_remote(url: str, access: Access | None, sequential: bool) -> Iterator[BinaryIO]:
    with open_input(url, sequential=sequential, access=access) as f:
        yield f  # type: ignore[misc]


def iter_lines(path: Location, access: Access | None = None) -> Iterator[bytes]:
    """The lines of a file without their newlines."""
    if is_url(path):
        with _open_remote(str(path), access, sequential=True) as f:
            rest = b""
            while chunk := f.read(_CHUNK):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                yield from lines
            if rest:
                yield rest
        return
    with open(path, "rb") as f:
        for line in f:
            yield line.rstrip(b"\n")


def line_key(line: bytes) -> str | None:
    """The key of a JSONL tokens line; None when the line is not a well-formed record.

    Our lines always start with the key, so it is decoded from there without
    parsing the token lists (which hold nearly all of a line's bytes).
    """
    if line.startswith(_KEY_PREFIX) and line.endswith(b"}"):
        try:
            key, _ = _DECODER.raw_decode(line.decode("utf-8"), len(_KEY_PREFIX))
        except ValueError:
            return None
        return key if isinstance(key, str) else None
    return None


def _parquet_source(path: Location, access: Access | None) -> contextlib.AbstractContextManager:
    """What pyarrow reads: the local path, or a remote file read by exact ranges."""
    if is_url(path):
        return _open_remote(str(path), access, sequential=False)
    return contextlib.nullcontext(path)


def read_rows(path: Location | str, access: Access | None = None) -> Iterator[dict[str, Any]]:
    """The records of a tokens file of either format, in file order.

    Raises ValueError on a JSONL line that is not JSON and UnreadableOutput on a
    Parquet file that cannot be read.
    """
    path = as_location(path)
    if _format(path) == "parquet":
        try:
            with _parquet_source(path, access) as source:
                yield from read_parquet_rows(source)
        except (pa.ArrowException, OSError) as exc:
            raise UnreadableOutput(f"{path}: {exc}") from exc
        return
    for number, line in enumerate(iter_lines(path, access), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}: line {number} is not JSON: {exc}") from exc


@dataclass
class TokensKeys:
    """The sample keys of a tokens file, and how many records had no readable key."""

    keys: list[str] = field(default_factory=list)
    corrupt: int = 0


def read_keys(path: Location | str, access: Access | None = None) -> TokensKeys:
    """The keys of a tokens file of either format; UnreadableOutput if Parquet cannot be read."""
    path = as_location(path)
    result = TokensKeys()
    if _format(path) == "parquet":
        try:
            with _parquet_source(path, access) as source:
                keys = read_parquet_keys(source)
        except (pa.ArrowException, OSError) as exc:
            raise UnreadableOutput(str(exc)) from exc
        for key in keys:
            if key:
                result.keys.append(key)
            else:
                result.corrupt += 1
        return result
    for line in iter_lines(path, access):
        key = line_key(line)
        if key is None:
            result.corrupt += 1
        else:
            result.keys.append(key)
    return result


def count_records(path: Location | str, access: Access | None = None) -> int:
    """Records in a tokens file: lines of JSONL (counted, not parsed), rows of Parquet
    (from the footer); UnreadableOutput if a Parquet footer cannot be read."""
    path = as_location(path)
    if _format(path) == "parquet":
        try:
            with _parquet_source(path, access) as source:
                return parquet_row_count(source)
        except (pa.ArrowException, OSError) as exc:
            raise UnreadableOutput(str(exc)) from exc
    count = 0
    with _open_remote(str(path), access, True) if is_url(path) else open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            count += chunk.count(b"\n")
    return count


@dataclass
class ErrorKeys:
    """What an errors file holds: sample keys, tar-level records, unreadable lines."""

    keys: list[str] = field(default_factory=list)
    tar_level: int = 0
    corrupt: int = 0


def read_error_keys(path: Location | str, access: Access | None = None) -> ErrorKeys:
    result = ErrorKeys()
    for line in iter_lines(as_location(path), access):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            result.corrupt += 1
            continue
        key = record.get("key") if isinstance(record, dict) else None
        if isinstance(key, str):
            result.keys.append(key)
        else:
            result.tar_level += 1
    return result

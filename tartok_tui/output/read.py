"""Reading a tar's output back, in either format: rows, keys, counts, error records.

``read_rows`` gives the records of a tokens file as dicts (JSONL lines as
written; Parquet rows with every column, null where a sample lacked a field,
JSON-text columns decoded). ``read_keys`` and ``count_records`` back ``verify``
and ``status`` without decoding the token lists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from tartok_tui.output.parquet import parquet_row_count, read_parquet_keys, read_parquet_rows
from tartok_tui.output.paths import format_of

_KEY_PREFIX = b'{"key": '
_DECODER = json.JSONDecoder()


class UnreadableOutput(Exception):
    """A tokens file that cannot be read at all (a Parquet file with a broken footer)."""


def _format(path: Path) -> str:
    output_format = format_of(path.name)
    if output_format is None:
        raise ValueError(f"{path}: not a tokens file (expected .jsonl or .parquet)")
    return output_format


def iter_lines(path: Path) -> Iterator[bytes]:
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


def read_rows(path: Path | str) -> Iterator[dict[str, Any]]:
    """The records of a tokens file of either format, in file order.

    Raises ValueError on a JSONL line that is not JSON and UnreadableOutput on a
    Parquet file that cannot be read.
    """
    path = Path(path)
    if _format(path) == "parquet":
        try:
            yield from read_parquet_rows(path)
        except (pa.ArrowException, OSError) as exc:
            raise UnreadableOutput(f"{path}: {exc}") from exc
        return
    for number, line in enumerate(iter_lines(path), 1):
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


def read_keys(path: Path | str) -> TokensKeys:
    """The keys of a tokens file of either format; UnreadableOutput if Parquet cannot be read."""
    path = Path(path)
    result = TokensKeys()
    if _format(path) == "parquet":
        try:
            keys = read_parquet_keys(path)
        except (pa.ArrowException, OSError) as exc:
            raise UnreadableOutput(str(exc)) from exc
        for key in keys:
            if key:
                result.keys.append(key)
            else:
                result.corrupt += 1
        return result
    for line in iter_lines(path):
        key = line_key(line)
        if key is None:
            result.corrupt += 1
        else:
            result.keys.append(key)
    return result


def count_records(path: Path | str) -> int:
    """Records in a tokens file: lines of JSONL (counted, not parsed), rows of Parquet
    (from the footer); UnreadableOutput if a Parquet footer cannot be read."""
    path = Path(path)
    if _format(path) == "parquet":
        try:
            return parquet_row_count(path)
        except (pa.ArrowException, OSError) as exc:
            raise UnreadableOutput(str(exc)) from exc
    count = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return count


@dataclass
class ErrorKeys:
    """What an errors file holds: sample keys, tar-level records, unreadable lines."""

    keys: list[str] = field(default_factory=list)
    tar_level: int = 0
    corrupt: int = 0


def read_error_keys(path: Path | str) -> ErrorKeys:
    result = ErrorKeys()
    for line in iter_lines(Path(path)):
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

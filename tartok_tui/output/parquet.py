"""Parquet tokens files: one row per good sample of a tar, in the tar's order, zstd.

Columns: ``key``, ``language``, ``text`` (strings), ``global_tokens`` and
``semantic_tokens`` (``list<uint16>``), then the sample's other metadata fields
in the order they first appear in the tar. Each metadata field's column type is
decided over the whole tar:

- all non-null values bool, int or str: a bool, int64 or string column; ints and
  floats mixed: float64 (an int beyond 2**53 in such a mix, or beyond int64: JSON text);
- lists, objects, and fields whose type differs between rows: a string column
  holding each value's JSON text, listed in the schema metadata (key ``tartok``,
  ``{"version": 1, "json_columns": [...]}``); ``read_parquet_rows`` decodes them;
- a row without the field holds null there (a missing field and a JSON null are
  not told apart); a field null in every row is a string column of nulls.

``language`` and ``text`` are always strings; a non-string value there is stored
as its JSON text. Types are decided per tar, so two tars can differ where a
field's values do (an int in one tar, a float in another).

Memory: a tar's rows are held until commit, because the metadata types need the
whole tar. Tokens are kept as flat uint16 buffers (2 bytes a token; 25k clips of
~30 s: ~80 MB) and each row's metadata as its dict; writing wraps the buffers
without copying and encodes one row group at a time.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from tartok_tui.codec.fields import TOKEN_FIELD_NAMES

FIXED_COLUMNS = ("key", "language", "text", *TOKEN_FIELD_NAMES)
"""The first columns of every file, in this order (the JSONL line's first fields too)."""
ROW_GROUP_ROWS = 4096
"""Rows per row group: ~12 MB of uint16 tokens for 30 s clips, a unit readers can stream."""
SCHEMA_KEY = b"tartok"
FORMAT_VERSION = 1
TOKEN_MAX = 0xFFFF
_MAX_OFFSET = 2**31 - 1
_FLOAT_EXACT = 2**53
_INT64 = (-(2**63), 2**63 - 1)

assert array("i").itemsize == 4, "list offsets are stored as int32"


@dataclass(frozen=True)
class ParquetRow:
    """One sample's row in the compact form it waits in: tokens as uint16 arrays."""

    key: str
    language: Any
    text: Any
    global_tokens: array
    semantic_tokens: array
    meta: dict[str, Any]


def _uint16(tokens: Any, name: str, key: str) -> array:
    try:
        return array("H", tokens)
    except (OverflowError, TypeError) as exc:
        raise ValueError(
            f"{key}: {name} must be integers in [0, {TOKEN_MAX}] to be stored as uint16 ({exc})"
        ) from exc


def compact_row(record: Mapping[str, Any]) -> ParquetRow:
    """A record (see ``writer.make_record``) in the form a Parquet writer keeps."""
    key = record["key"]
    return ParquetRow(
        key=key,
        language=record.get("language"),
        text=record.get("text"),
        global_tokens=_uint16(record["global_tokens"], "global_tokens", key),
        semantic_tokens=_uint16(record["semantic_tokens"], "semantic_tokens", key),
        meta={k: v for k, v in record.items() if k not in FIXED_COLUMNS},
    )


@dataclass
class TokenLists:
    """A list<uint16> column as Arrow lays it out: flat values + int32 offsets."""

    values: array = field(default_factory=lambda: array("H"))
    offsets: array = field(default_factory=lambda: array("i", [0]))

    def append(self, tokens: array) -> None:
        if len(self.values) + len(tokens) > _MAX_OFFSET:
            raise ValueError("more than 2**31 tokens in one tar: too many for one Parquet file")
        self.values.extend(tokens)
        self.offsets.append(len(self.values))

    def to_arrow(self) -> pa.Array:
        # Both buffers are wrapped, not copied.
        values = pa.Array.from_buffers(
            pa.uint16(), len(self.values), [None, pa.py_buffer(self.values)]
        )
        offsets = pa.Array.from_buffers(
            pa.int32(), len(self.offsets), [None, pa.py_buffer(self.offsets)]
        )
        return pa.ListArray.from_arrays(offsets, values, type=pa.list_(pa.uint16()))


class ParquetRows:
    """The rows of one tar, kept until the file is written (see the module doc on memory)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.languages: list[Any] = []
        self.texts: list[Any] = []
        self.global_tokens = TokenLists()
        self.semantic_tokens = TokenLists()
        self.metas: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.keys)

    def append(self, row: ParquetRow) -> None:
        self.global_tokens.append(row.global_tokens)
        self.semantic_tokens.append(row.semantic_tokens)
        self.keys.append(row.key)
        self.languages.append(row.language)
        self.texts.append(row.text)
        self.metas.append(row.meta)

    def table(self, fingerprint: str | None = None) -> pa.Table:
        """The rows as an Arrow table with the file's schema and metadata (``fingerprint``:
        the run manifest's, see ``output.manifest``)."""
        columns: dict[str, pa.Array] = {
            "key": pa.array(self.keys, pa.string()),
            "language": pa.array([as_text(v) for v in self.languages], pa.string()),
            "text": pa.array([as_text(v) for v in self.texts], pa.string()),
            "global_tokens": self.global_tokens.to_arrow(),
            "semantic_tokens": self.semantic_tokens.to_arrow(),
        }
        json_columns = []
        for name in _field_names(self.metas):
            array_, is_json = _metadata_column([m.get(name) for m in self.metas])
            columns[name] = array_
            if is_json:
                json_columns.append(name)
        table = pa.table(columns)
        info: dict[str, Any] = {"version": FORMAT_VERSION, "json_columns": json_columns}
        if fingerprint is not None:
            info["fingerprint"] = fingerprint
        return table.replace_schema_metadata({SCHEMA_KEY: json.dumps(info).encode()})


def as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _field_names(metas: list[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for meta in metas:
        for name in meta:
            names.setdefault(name)
    return list(names)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


def _metadata_column(values: list[Any]) -> tuple[pa.Array, bool]:
    """(the column, whether it holds JSON text) for one metadata field's values."""
    kinds = {_kind(v) for v in values if v is not None}
    ints = [v for v in values if v is not None and _kind(v) == "int"]
    if kinds <= {"str"}:
        return pa.array(values, pa.string()), False
    if kinds == {"bool"}:
        return pa.array(values, pa.bool_()), False
    if kinds == {"int"} and all(_INT64[0] <= v <= _INT64[1] for v in ints):
        return pa.array(values, pa.int64()), False
    if kinds == {"float"} or (
        kinds == {"int", "float"} and all(abs(v) <= _FLOAT_EXACT for v in ints)
    ):
        return pa.array([None if v is None else float(v) for v in values], pa.float64()), False
    text = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
    return pa.array(text, pa.string()), True


def write_parquet(rows: ParquetRows, sink: BinaryIO | Any, fingerprint: str | None = None) -> None:
    """Write ``rows`` as one Parquet file into the open file-like ``sink`` (left open)."""
    pq.write_table(
        rows.table(fingerprint),
        sink,
        compression="zstd",
        row_group_size=ROW_GROUP_ROWS,
    )


# ---------------------------------------------------------------------- reading


def _info(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(SCHEMA_KEY)
    return {} if raw is None else dict(json.loads(raw))


def json_columns(schema: pa.Schema) -> list[str]:
    """The columns of a tokens file that hold JSON text."""
    return list(_info(schema).get("json_columns", []))


def parquet_fingerprint(path: Path | str | BinaryIO) -> str | None:
    """The run manifest fingerprint a tokens file was written under (None: not recorded)."""
    value = _info(pq.read_schema(path)).get("fingerprint")
    return None if value is None else str(value)


def read_parquet_rows(
    path: Path | str | BinaryIO, batch_rows: int = 1024
) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet tokens file (a path or a seekable file) as dicts, JSON-text
    columns decoded."""
    parquet = pq.ParquetFile(path)
    decode = json_columns(parquet.schema_arrow)
    for batch in parquet.iter_batches(batch_size=batch_rows):
        for row in batch.to_pylist():
            for name in decode:
                if row[name] is not None:
                    row[name] = json.loads(row[name])
            yield row


def read_parquet_keys(path: Path | str | BinaryIO) -> list[str | None]:
    """The ``key`` column alone (the token columns are not read)."""
    return pq.read_table(path, columns=["key"]).column("key").to_pylist()


def parquet_row_count(path: Path | str | BinaryIO) -> int:
    """Rows in a Parquet file, from its footer alone."""
    return pq.read_metadata(path).num_rows

"""``--format hf``: a Hugging Face dataset folder of Parquet shards and a dataset card.

    DEST/data/sub/X.parquet            one shard per tokens file (``--split-by language``:
    DEST/data/<language>/sub/X.parquet   one per tokens file and language)
    DEST/README.md                     the dataset card (see export/card.py), written last

Every shard has the same schema, so the folder loads as one dataset: ``key``, ``language``,
``text`` (strings), the token fields as ``list<uint16>``, and ``metadata``: the sample's
other fields as JSON text (their types differ between tars; one schema cannot hold them
as columns). zstd, row groups of 4,096 rows, written as they fill: memory stays one row
group per language whatever the size of a tokens file.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from tartok_tui.codec.fields import TOKEN_FIELDS
from tartok_tui.export.card import dataset_card
from tartok_tui.export.destination import Destination
from tartok_tui.export.records import ExportTotals, Settings, language_label
from tartok_tui.export.unit import Parts
from tartok_tui.output.manifest import Manifest
from tartok_tui.output.parquet import ROW_GROUP_ROWS, TokenLists, as_text
from tartok_tui.output.samples import Sample
from tartok_tui.output.target import PartialFile

DATA_DIR = PurePosixPath("data")
CARD_KEY = PurePosixPath("README.md")
METADATA_COLUMN = "metadata"
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("language", pa.string()),
        ("text", pa.string()),
        *((f.name, pa.list_(pa.uint16())) for f in TOKEN_FIELDS),
        (METADATA_COLUMN, pa.string()),
    ]
)


def shard_key(stem: PurePosixPath, language: str | None) -> PurePosixPath:
    """``data/sub/X.parquet``, or ``data/<language>/sub/X.parquet`` when split by language."""
    folder = DATA_DIR if language is None else DATA_DIR / language
    return folder / stem.with_name(stem.name + ".parquet")


class _Rows:
    """One row group being filled: strings as lists, tokens as flat uint16 buffers
    (``output.parquet.TokenLists``: 2 bytes a token, not a Python int each)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.languages: list[str | None] = []
        self.texts: list[str | None] = []
        self.tokens = {f.name: TokenLists() for f in TOKEN_FIELDS}
        self.metadata: list[str] = []

    def __len__(self) -> int:
        return len(self.keys)

    def append(self, sample: Sample) -> None:
        for f in TOKEN_FIELDS:
            self.tokens[f.name].append(sample.tokens[f.name])
        self.keys.append(sample.key)
        self.languages.append(as_text(sample.language))
        self.texts.append(as_text(sample.text))
        self.metadata.append(json.dumps(sample.meta, ensure_ascii=False))

    def table(self) -> pa.Table:
        columns = {
            "key": pa.array(self.keys, pa.string()),
            "language": pa.array(self.languages, pa.string()),
            "text": pa.array(self.texts, pa.string()),
            **{name: lists.to_arrow() for name, lists in self.tokens.items()},
            METADATA_COLUMN: pa.array(self.metadata, pa.string()),
        }
        return pa.Table.from_pydict(columns, schema=SCHEMA)


class HfUnit:
    def __init__(self, stem: PurePosixPath, dest: Destination, split_by: str | None) -> None:
        self.stem = stem
        self.split_by = split_by
        self.parts = Parts(dest)
        self.rows: dict[PurePosixPath, _Rows] = {}
        self.writers: dict[PurePosixPath, pq.ParquetWriter] = {}
        self.keys: dict[str | None, PurePosixPath] = {}

    def add(self, sample: Sample) -> bool:
        language = language_label(sample.language) if self.split_by == "language" else None
        key = self.keys.get(language)
        if key is None:
            key = self.keys[language] = shard_key(self.stem, language)
        rows = self.rows.setdefault(key, _Rows())
        rows.append(sample)
        if len(rows) >= ROW_GROUP_ROWS:
            self._flush(key)
        return True

    def _flush(self, key: PurePosixPath) -> None:
        rows = self.rows.pop(key, None)
        if not rows:
            return
        writer = self.writers.get(key)
        if writer is None:
            writer = pq.ParquetWriter(self.parts.get(key), SCHEMA, compression="zstd")
            self.writers[key] = writer
        writer.write_table(rows.table(), row_group_size=ROW_GROUP_ROWS)

    def finish(self) -> list[PartialFile]:
        for key in list(self.rows):
            self._flush(key)
        for writer in self.writers.values():
            writer.close()
        return self.parts.in_order()

    def abort(self) -> None:
        self.rows.clear()
        self.writers.clear()  # their files are discarded below; nothing more is written
        self.parts.abort()


class HfFormat:
    name = "hf"

    def __init__(self, split_by: str | None = None) -> None:
        self.split_by = split_by

    def unit(self, stem: PurePosixPath, dest: Destination) -> HfUnit:
        return HfUnit(stem, dest, self.split_by)

    def finish(
        self, dest: Destination, totals: ExportTotals, settings: Settings, manifest: Manifest | None
    ) -> None:
        card = dataset_card(totals, settings, manifest, DATA_DIR, SCHEMA, METADATA_COLUMN)
        dest.write(CARD_KEY, card.encode("utf-8"))

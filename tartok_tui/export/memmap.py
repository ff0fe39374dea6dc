"""``--format memmap``: flat token files a trainer maps into memory (LLaSA, Megatron-style).

One shard per tokens file, in the tokens file's sample order:

    DEST/sub/X/global.bin     uint16 little-endian, every sample's global tokens back to back
    DEST/sub/X/semantic.bin   uint16 little-endian, every sample's semantic tokens back to back
    DEST/sub/X/meta.jsonl     line i: sample i's key, language, text and other metadata
    DEST/sub/X/index.npy      int64 (samples, 4): per sample, for each token stream in the
                              order global, semantic: offset and length, in tokens, in that
                              stream's .bin (written last: a shard with an index is whole)
    DEST/memmap.json          the layout (dtypes, stream order, index columns) and the shards
                              in order with their sample and token counts, written last

    sem = np.memmap("DEST/sub/X/semantic.bin", dtype="<u2", mode="r")
    index = np.load("DEST/sub/X/index.npy")
    tokens_of_sample_i = sem[index[i, 2] : index[i, 2] + index[i, 3]]

Tokens stream straight to the .bin files; only the index (32 bytes a sample) waits for
the end of a shard.
"""

from __future__ import annotations

import json
import sys
from array import array
from pathlib import PurePosixPath

import numpy as np

from tartok_tui.codec.fields import TOKEN_FIELDS
from tartok_tui.export.destination import Destination
from tartok_tui.export.records import ExportTotals, Settings
from tartok_tui.export.unit import Parts
from tartok_tui.output.manifest import Manifest
from tartok_tui.output.samples import Sample
from tartok_tui.output.target import PartialFile

LAYOUT_KEY = PurePosixPath("memmap.json")
TOKEN_DTYPE = "<u2"
INDEX_DTYPE = "<i8"
INDEX_COLUMNS = [f"{f.stream}_{part}" for f in TOKEN_FIELDS for part in ("offset", "length")]
META_NAME = "meta.jsonl"
INDEX_NAME = "index.npy"


def stream_file(stream: str) -> str:
    return f"{stream}.bin"


class MemmapUnit:
    def __init__(self, stem: PurePosixPath, dest: Destination) -> None:
        self.stem = stem
        self.parts = Parts(dest)
        self.index = array("q")
        self.written = dict.fromkeys((f.stream for f in TOKEN_FIELDS), 0)

    def add(self, sample: Sample) -> bool:
        for field in TOKEN_FIELDS:
            tokens = sample.tokens[field.name]
            if sys.byteorder == "big":
                tokens = array("H", tokens)
                tokens.byteswap()  # the files are little-endian whatever the machine
            self.parts.get(self.stem / stream_file(field.stream)).write(tokens.tobytes())
            self.index.extend((self.written[field.stream], len(tokens)))
            self.written[field.stream] += len(tokens)
        meta = {"key": sample.key, "language": sample.language, "text": sample.text, **sample.meta}
        line = json.dumps(meta, ensure_ascii=False) + "\n"
        self.parts.get(self.stem / META_NAME).write(line.encode("utf-8"))
        return True

    def finish(self) -> list[PartialFile]:
        if not self.parts.files:
            return []  # no samples: no shard
        rows = np.frombuffer(self.index, dtype=np.int64).reshape(-1, len(INDEX_COLUMNS))
        index = self.stem / INDEX_NAME
        np.save(self.parts.get(index), rows.astype(INDEX_DTYPE), allow_pickle=False)
        return self.parts.in_order(last=index)

    def abort(self) -> None:
        self.parts.abort()


class MemmapFormat:
    name = "memmap"

    def unit(self, stem: PurePosixPath, dest: Destination) -> MemmapUnit:
        return MemmapUnit(stem, dest)

    def finish(
        self, dest: Destination, totals: ExportTotals, settings: Settings, manifest: Manifest | None
    ) -> None:
        layout = {
            "format": "tartok-memmap",
            "version": 1,
            "token_dtype": TOKEN_DTYPE,
            "streams": {
                f.stream: {"field": f.name, "file": stream_file(f.stream), "codes": f.codes}
                for f in TOKEN_FIELDS
            },
            "index": {"file": INDEX_NAME, "dtype": INDEX_DTYPE, "columns": INDEX_COLUMNS},
            "meta": META_NAME,
            "fingerprint": None if manifest is None else manifest.fingerprint,
            "samples": totals.samples,
            "shards": [
                {"path": str(stem), "samples": record.samples, "tokens": record.tokens}
                for stem, record in totals.units
                if record.samples
            ],
        }
        data = json.dumps(layout, ensure_ascii=False, indent=1) + "\n"
        dest.write(LAYOUT_KEY, data.encode("utf-8"))

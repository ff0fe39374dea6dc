"""An output's records as samples: the key, language, text, the token fields (as the codec
declares them, ``codec.fields``) and the rest of the metadata, read from a committed tokens
file of either format, local or on object storage, a record at a time."""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tartok_tui.codec.fields import TOKEN_FIELDS
from tartok_tui.output.committed import TokensFile
from tartok_tui.output.parquet import FIXED_COLUMNS
from tartok_tui.output.read import read_rows
from tartok_tui.storage import Access


@dataclass(frozen=True)
class Sample:
    key: str
    language: Any
    text: Any
    tokens: dict[str, array[int]]
    """Field name -> tokens as uint16 (``array("H")``), in TOKEN_FIELDS order."""
    meta: dict[str, Any]
    """The record's other fields, in their order."""

    @property
    def frames(self) -> int:
        """Frame-rate tokens (semantic tokens for BiCodec): the clip's length in frames."""
        return max(
            (len(self.tokens[f.name]) for f in TOKEN_FIELDS if f.per_clip is None), default=0
        )


def as_sample(record: Mapping[str, Any]) -> Sample:
    """A record as a Sample; ValueError when its key or a token field is not what the writer
    writes (a string; lists of integers in [0, 65535])."""
    key = record.get("key")
    if not isinstance(key, str):
        raise ValueError(f"a record without a string key: {str(key)[:80]!r}")
    tokens = {}
    for field in TOKEN_FIELDS:
        values = record.get(field.name)
        if not isinstance(values, list):
            raise ValueError(f"{key}: {field.name} is not a list")
        try:
            # In C: every value an int in [0, 65535] (a bool would pass as 0 or 1).
            tokens[field.name] = array("H", values)
        except (TypeError, OverflowError) as exc:
            raise ValueError(
                f"{key}: {field.name} holds a value that is not a token ({exc})"
            ) from exc
    meta = {k: v for k, v in record.items() if k not in FIXED_COLUMNS}
    return Sample(key, record.get("language"), record.get("text"), tokens, meta)


def read_samples(file: TokensFile, access: Access | None = None) -> Iterator[Sample]:
    """The samples of a committed tokens file, in file order (ValueError, UnreadableOutput
    and the storage errors of ``output.read``)."""
    for record in read_rows(file.location, access):
        yield as_sample(record)

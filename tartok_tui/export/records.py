"""An export's own bookkeeping, under ``DEST/.tartok-export/``.

    settings.json            format and options of this export, and the tokens' fingerprint
                             (the run manifest's): another export into DEST is refused
    units/sub/X.json         one per exported tokens file, written after all its files: its
                             existence means "this unit is done" (the exactly-once mark)

A unit's record names its source (key and size), the files it wrote and what they hold, so
a rerun skips it, redoes it when its source has changed, and the final files (a dataset
card, an index) are built from the records alone. Every file is deterministic: the same
output exported twice gives the same bytes.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from tartok_tui.config import ConfigError

EXPORT_DIR = PurePosixPath(".tartok-export")
UNITS_DIR = EXPORT_DIR / "units"
SETTINGS_KEY = EXPORT_DIR / "settings.json"
VERSION = 1


def _encode(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode()


def language_label(value: Any) -> str:
    """A sample's language as a folder and config name: ``en``; ``unknown`` for none."""
    text = value if isinstance(value, str) else "" if value is None else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text.strip()).strip("_") or "unknown"


def unit_key(stem: PurePosixPath) -> PurePosixPath:
    """The record of the unit made from the tokens file ``sub/X.*``: ``units/sub/X.json``."""
    return UNITS_DIR / stem.with_name(stem.name + ".json")


def unit_stem(key: PurePosixPath) -> PurePosixPath | None:
    """The inverse of ``unit_key``; None for a key that is not a unit record."""
    parts = key.parts[len(UNITS_DIR.parts) :]
    if key.parts[: len(UNITS_DIR.parts)] != UNITS_DIR.parts or not parts:
        return None
    if not parts[-1].endswith(".json"):
        return None
    return PurePosixPath(*parts[:-1], parts[-1].removesuffix(".json"))


@dataclass(frozen=True)
class Settings:
    format: str
    split_by: str | None
    fingerprint: str | None
    """The run manifest's fingerprint of the exported tokens (None: the output has none)."""
    version: int = VERSION

    def to_bytes(self) -> bytes:
        return _encode(asdict(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> Settings:
        raw = json.loads(data)
        return cls(raw["format"], raw.get("split_by"), raw.get("fingerprint"), raw["version"])

    def check_same(self, existing: Settings, where: str) -> None:
        """ConfigError naming what differs from the export already in ``where``."""
        changes = [
            f"{name}: {getattr(existing, name)} there, {getattr(self, name)} now"
            for name in ("format", "split_by", "fingerprint")
            if getattr(existing, name) != getattr(self, name)
        ]
        if changes:
            raise ConfigError(
                f"{where} holds an export made otherwise ({'; '.join(changes)}). "
                "Export into another directory, or remove it first."
            )


@dataclass
class UnitRecord:
    source: str
    """The tokens file, relative to the output: ``sub/X.jsonl``."""
    source_size: int
    files: dict[str, int] = field(default_factory=dict)
    """Key relative to DEST -> size in bytes, in the order published."""
    samples: int = 0
    skipped: int = 0
    """Samples the format cannot hold (see the format's module)."""
    tokens: dict[str, int] = field(default_factory=dict)
    """Token field -> tokens written."""
    languages: dict[str, int] = field(default_factory=dict)
    """Samples per language value (``unknown`` for none)."""
    version: int = VERSION

    def to_bytes(self) -> bytes:
        return _encode(asdict(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> UnitRecord:
        raw = json.loads(data)
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})

    def matches(self, source: PurePosixPath, size: int) -> bool:
        return self.source == str(source) and self.source_size == size


@dataclass
class ExportTotals:
    """The records of every unit of an export, summed (what the final files describe)."""

    units: list[tuple[PurePosixPath, UnitRecord]] = field(default_factory=list)
    samples: int = 0
    skipped: int = 0
    tokens: Counter[str] = field(default_factory=Counter)
    languages: Counter[str] = field(default_factory=Counter)
    bytes: int = 0

    def add(self, stem: PurePosixPath, record: UnitRecord) -> None:
        self.units.append((stem, record))
        self.samples += record.samples
        self.skipped += record.skipped
        self.tokens.update(record.tokens)
        self.languages.update(record.languages)
        self.bytes += sum(record.files.values())

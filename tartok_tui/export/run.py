"""``tartok-tui export``: an output's committed tokens, streamed into a training format.

One export unit per committed tokens file (``sub/X.jsonl`` or ``.parquet``), exactly once:
a unit's files are written as partial files, published (fsync + rename, or one upload per
object), then its record (``export.records``) is published last. A rerun skips every unit
with a record for the same source file and redoes the rest, whose files it overwrites
with the same bytes: a killed export run again ends byte-identical to one never stopped.
When every unit is done the format's final files are (re)written from the records.

Memory stays flat: samples are read one at a time (a JSONL line, a Parquet batch) and
every format writes them as they come.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tartok_tui.codec.fields import TOKEN_FIELDS
from tartok_tui.config import ConfigError
from tartok_tui.export import FORMAT_NAMES, SPLITS
from tartok_tui.export.destination import Destination
from tartok_tui.export.hf import HfFormat
from tartok_tui.export.memmap import MemmapFormat
from tartok_tui.export.records import (
    SETTINGS_KEY,
    UNITS_DIR,
    ExportTotals,
    Settings,
    UnitRecord,
    language_label,
    unit_key,
    unit_stem,
)
from tartok_tui.export.spark_tts import SparkTtsFormat
from tartok_tui.export.unit import ExportFormat
from tartok_tui.output.committed import TokensFile, committed_tokens
from tartok_tui.output.manifest import Manifest, read_manifest
from tartok_tui.output.read import UnreadableOutput
from tartok_tui.output.samples import read_samples
from tartok_tui.output.target import OutputUnavailable
from tartok_tui.storage import Access, Location, StorageError, redact_location

FORMATS: dict[str, Callable[[str | None], ExportFormat]] = {
    "hf": HfFormat,
    "memmap": lambda split_by: MemmapFormat(),
    "spark-tts": lambda split_by: SparkTtsFormat(),
}
"""The writer of each of FORMAT_NAMES."""
assert tuple(FORMATS) == FORMAT_NAMES

UNIT_ERRORS = (ValueError, ArithmeticError, UnreadableOutput, OSError)
"""What fails one unit (a broken tokens file, a token past uint16, a read or upload that
failed after its retries); the export goes on and exits 1. OutputUnavailable (the
destination takes no more) stops it."""


@dataclass
class ExportResult:
    units: int
    """Committed tokens files in the output."""
    exported: int = 0
    already: int = 0
    """Units done by an earlier export (skipped)."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(tokens file, why) of the units that could not be exported this time."""
    samples: int = 0
    skipped_samples: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    both_formats: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    totals: ExportTotals | None = None
    """Set when every unit is done and the final files are written."""

    @property
    def ok(self) -> bool:
        return not self.failed


def _manifest(source: Location, access: Access | None) -> Manifest | None:
    try:
        return read_manifest(source, access)
    except ValueError as exc:
        raise ConfigError(f"{redact_location(source)}: {exc}") from exc


def _open_destination(
    dest: Location, settings: Settings, access: Access | None, spool_dir: Path | None
) -> Destination:
    """The destination, its settings recorded (or checked against an earlier export's)."""
    destination = Destination(dest, access, spool_dir)
    destination.sweep()
    existing = destination.read(SETTINGS_KEY)
    if existing is None:
        destination.write(SETTINGS_KEY, settings.to_bytes())
    else:
        try:
            earlier = Settings.from_bytes(existing)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{destination.name}/{SETTINGS_KEY}: unreadable ({exc})") from exc
        settings.check_same(earlier, destination.name)
    return destination


def _done_records(dest: Destination, warnings: list[str]) -> dict[PurePosixPath, UnitRecord]:
    """The units an earlier export finished; an unreadable record is a unit to redo."""
    done = {}
    for key in dest.keys_under(UNITS_DIR):
        stem = unit_stem(key)
        data = dest.read(key) if stem is not None else None
        if stem is None or data is None:
            continue
        try:
            done[stem] = UnitRecord.from_bytes(data)
        except (ValueError, TypeError) as exc:
            warnings.append(f"{dest.name}/{key} is unreadable ({exc}): the unit is redone")
    return done


def _export_unit(
    fmt: ExportFormat, file: TokensFile, dest: Destination, access: Access | None
) -> UnitRecord:
    """Write one unit's files, publish them, then its record (see the module doc)."""
    writer = fmt.unit(file.stem, dest)
    record = UnitRecord(str(file.key), file.size)
    tokens: Counter[str] = Counter()
    languages: Counter[str] = Counter()
    try:
        for sample in read_samples(file, access):
            if not writer.add(sample):
                record.skipped += 1
                continue
            record.samples += 1
            languages[language_label(sample.language)] += 1
            for f in TOKEN_FIELDS:
                tokens[f.name] += len(sample.tokens[f.name])
        for part in writer.finish():
            size = part.tell()
            dest.publish(part)
            record.files[str(part.key)] = size
    except BaseException:
        writer.abort()
        raise
    record.tokens = {f.name: tokens[f.name] for f in TOKEN_FIELDS}
    record.languages = dict(sorted(languages.items()))
    dest.write(unit_key(file.stem), record.to_bytes())
    return record


def _remove_unit(dest: Destination, stem: PurePosixPath, record: UnitRecord) -> None:
    """Forget a unit whose source changed: its record first, then its files."""
    dest.remove(unit_key(stem))
    for key in record.files:
        dest.remove(PurePosixPath(key))


def run_export(
    source: Location,
    dest: Location,
    format_name: str,
    *,
    split_by: str | None = None,
    access: Access | None = None,
    spool_dir: Path | None = None,
    on_unit: Callable[[int, int, TokensFile], None] | None = None,
) -> ExportResult:
    """Export ``source``'s committed tokens into ``dest`` (see the module doc).

    ConfigError for bad arguments or a destination holding another export; OutputUnavailable
    when the destination takes no more; StorageError when a store cannot be used at all.
    ``on_unit(i, n, file)`` is called before each unit."""
    if format_name not in FORMATS:
        raise ConfigError(f"unknown export format {format_name!r} (one of {', '.join(FORMATS)})")
    if split_by is not None and format_name not in SPLITS.get(split_by, ()):
        raise ConfigError(f"--split-by {split_by} is not available for --format {format_name}")
    started = time.monotonic()
    committed = committed_tokens(source, access)
    if not committed.files:
        raise ConfigError(f"no committed tokens files in {redact_location(source)}")
    manifest = _manifest(source, access)
    settings = Settings(format_name, split_by, None if manifest is None else manifest.fingerprint)
    destination = _open_destination(dest, settings, access, spool_dir)
    fmt = FORMATS[format_name](split_by)
    result = ExportResult(
        len(committed.files), both_formats=[str(s) for s in committed.both_formats]
    )
    records = _done_records(destination, result.warnings)
    for i, file in enumerate(committed.files):
        if on_unit is not None:
            on_unit(i, len(committed.files), file)
        earlier = records.get(file.stem)
        if earlier is not None and earlier.matches(file.key, file.size):
            result.already += 1
            continue
        if earlier is not None:
            _remove_unit(destination, file.stem, earlier)
            del records[file.stem]
        try:
            records[file.stem] = _export_unit(fmt, file, destination, access)
        except OutputUnavailable:
            raise
        except (*UNIT_ERRORS, StorageError) as exc:
            result.failed.append((str(file.key), f"{type(exc).__name__}: {exc}"))
            continue
        result.exported += 1
        result.samples += records[file.stem].samples
        result.skipped_samples += records[file.stem].skipped
        result.bytes_read += file.size
    if result.ok:
        totals = ExportTotals()
        for stem in sorted(records, key=lambda s: s.parts):
            totals.add(stem, records[stem])
        fmt.finish(destination, totals, settings, manifest)
        destination.tidy()
        result.totals = totals
    result.seconds = time.monotonic() - started
    return result

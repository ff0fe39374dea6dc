"""An output directory's state from its files alone, and a check of it against the inputs.

``scan_output`` backs ``tartok-tui status``: which tars are done (their tokens
file exists, ``X.jsonl`` or ``X.parquet``), how many records and error records
each has, what partial files, journals and half-committed error files are lying
around, and which tars have tokens files in both formats (a conflict). ``verify``
backs ``tartok-tui verify``: every sample of every selected input tar must
appear exactly once in the output, as a record or as an error record with its
key, whatever the format.

Both take local paths or URLs. An output URL is listed once (``output.files``); it holds
no partial files or journals (those stay in the writer's local spool), so for it those
lists are empty.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tartok_tui.output.committed import listed_tokens_stems, local_tokens_stems, strip_suffix
from tartok_tui.output.files import (
    ListedFiles,
    LocalFiles,
    OutputFiles,
    output_files,
)
from tartok_tui.output.paths import (
    ERRORS_DIR,
    ERRORS_SUFFIX,
    OUTPUT_FORMATS,
    PARTIAL_DIR,
    RESERVED_TOP_DIRS,
    SUMMARY_NAME,
    format_of,
    summary_path,
    tar_output_paths,
)
from tartok_tui.output.read import UnreadableOutput, count_records, read_error_keys, read_keys
from tartok_tui.shards.discover import discover_tars
from tartok_tui.shards.reader import scan_tar
from tartok_tui.storage import Access, Location, as_location, is_url


def _tar_name(stem: PurePosixPath) -> str:
    """The tar an output stem belongs to (``sub/X`` -> ``sub/X.tar``): status reads the
    output alone, so a ``.tar.gz`` input is named ``.tar`` here too."""
    return f"{stem}.tar"


# ---------------------------------------------------------------------- status


@dataclass
class DoneTar:
    """A tar whose tokens file exists."""

    tar: str
    """Relative to the input directory, e.g. ``EN/EN-B000000.tar``."""
    lines: int
    """Tokens records: lines of JSONL, rows of Parquet."""
    errors: int
    """Error records of samples."""
    tar_errors: int
    """Error records about the tar itself (damage)."""
    format: str = "jsonl"
    """The format of the tokens file counted (the first of OUTPUT_FORMATS present)."""
    unreadable: str | None = None
    """Why the tokens file could not be read (a Parquet file with a broken footer)."""


@dataclass
class PartialFile:
    tar: str
    kind: str
    """The format of a tokens file ("jsonl", "parquet"), or "errors"."""
    path: Path
    size: int


@dataclass
class OutputStatus:
    output_dir: Location
    done: list[DoneTar] = field(default_factory=list)
    partial: list[PartialFile] = field(default_factory=list)
    """Partial files of tars with no tokens file yet: in progress, or left by a killed attempt."""
    stale_partial: list[PartialFile] = field(default_factory=list)
    """Partial files of tars that are done anyway: leftovers, safe to delete."""
    journals: list[str] = field(default_factory=list)
    """Tars with an isolation journal (a poison tar being, or having been, isolated)."""
    orphan_errors: list[str] = field(default_factory=list)
    """Tars with an errors file but no tokens file (an attempt died between the two renames)."""
    both_formats: list[str] = field(default_factory=list)
    """Tars with a tokens file in more than one format (runs with different formats
    wrote them; keep one). Their DoneTar counts the first of OUTPUT_FORMATS."""
    summary: dict[str, Any] | None = None
    """The last run-summary.json, if any."""

    @property
    def tars_done(self) -> int:
        return len(self.done)

    @property
    def lines(self) -> int:
        return sum(t.lines for t in self.done)

    @property
    def error_records(self) -> int:
        return sum(t.errors + t.tar_errors for t in self.done)

    @property
    def with_errors(self) -> list[DoneTar]:
        return [t for t in self.done if t.errors or t.tar_errors]

    @property
    def partial_tars(self) -> list[str]:
        return sorted({p.tar for p in self.partial})

    @property
    def formats(self) -> dict[str, int]:
        """Done tars per format of their tokens file."""
        counts = Counter(t.format for t in self.done)
        return {f: counts[f] for f in OUTPUT_FORMATS if counts[f]}

    @property
    def unreadable(self) -> list[DoneTar]:
        return [t for t in self.done if t.unreadable]

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir),
            "tars_done": self.tars_done,
            "formats": self.formats,
            "lines": self.lines,
            "error_records": self.error_records,
            "tars_with_errors": {
                t.tar: {"errors": t.errors, "tar_errors": t.tar_errors} for t in self.with_errors
            },
            "partial_tars": self.partial_tars,
            "stale_partial_files": [str(p.path) for p in self.stale_partial],
            "journals": self.journals,
            "orphan_errors": self.orphan_errors,
            "both_formats": self.both_formats,
            "unreadable": {t.tar: t.unreadable for t in self.unreadable},
            "done": {
                t.tar: {"lines": t.lines, "errors": t.errors, "format": t.format} for t in self.done
            },
            "summary": self.summary,
        }


def _walk_files(root: Path, suffix: str) -> Iterator[PurePosixPath]:
    """Files under ``root`` ending in ``suffix``, relative to it, in sorted order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        for name in sorted(filenames):
            if name.endswith(suffix):
                yield rel_dir / name


def _done_tar(
    files: OutputFiles, stem: PurePosixPath, formats: list[str], access: Access | None = None
) -> DoneTar:
    output_format = min(formats, key=OUTPUT_FORMATS.index)
    errors = tar_errors = lines = 0
    unreadable = None
    errors_key = PurePosixPath(ERRORS_DIR) / f"{stem}{ERRORS_SUFFIX}"
    if files.exists(errors_key):
        found = read_error_keys(files.locate(errors_key), access)
        errors, tar_errors = len(found.keys) + found.corrupt, found.tar_level
    try:
        lines = count_records(files.locate(PurePosixPath(f"{stem}.{output_format}")), access)
    except UnreadableOutput as exc:
        unreadable = str(exc)
    return DoneTar(_tar_name(stem), lines, errors, tar_errors, output_format, unreadable)


def _add_done(
    status: OutputStatus,
    files: OutputFiles,
    done: dict[PurePosixPath, list[str]],
    access: Access | None = None,
) -> None:
    for stem in sorted(done, key=lambda p: p.parts):
        status.done.append(_done_tar(files, stem, done[stem], access))
        if len(done[stem]) > 1:
            status.both_formats.append(_tar_name(stem))


def _scan_listed(files: ListedFiles, access: Access | None) -> OutputStatus:
    """``scan_output`` of an output URL, from one listing of its prefix."""
    status = OutputStatus(files.location)
    done, error_stems = listed_tokens_stems(files.sizes)
    _add_done(status, files, done, access)
    status.orphan_errors = [_tar_name(stem) for stem in error_stems if stem not in done]
    if files.exists(PurePosixPath(SUMMARY_NAME)):
        try:
            status.summary = json.loads(files.store.read_bytes(SUMMARY_NAME))
        except ValueError as exc:
            status.summary = {"unreadable": f"{files.store.url_of(SUMMARY_NAME)}: {exc}"}
    return status


def scan_output(output_dir: Location | str, access: Access | None = None) -> OutputStatus:
    """The state of ``output_dir`` (a directory or URL) from its files alone."""
    if is_url(output_dir):
        return _scan_listed(ListedFiles(str(output_dir), access), access)
    out = Path(output_dir)
    status = OutputStatus(out)
    done = local_tokens_stems(out)
    _add_done(status, LocalFiles(out), done)

    errors_root = out / ERRORS_DIR
    if errors_root.is_dir():
        for rel in _walk_files(errors_root, ERRORS_SUFFIX):
            stem = rel.with_name(strip_suffix(rel.name, ERRORS_SUFFIX))
            if stem not in done:
                status.orphan_errors.append(_tar_name(stem))

    partial_root = out / PARTIAL_DIR
    for sub in ("out", "errors"):
        root = partial_root / sub
        if not root.is_dir():
            continue
        for rel in _walk_files(root, ".part"):
            # "X.parquet.<host>-<pid>-<lease>.part" -> "X.parquet" -> "X"
            final_name = rel.name.rsplit(".", 2)[0]
            kind = "errors" if sub == "errors" else (format_of(final_name) or "unknown")
            suffix = ERRORS_SUFFIX if sub == "errors" else f".{kind}"
            stem = rel.with_name(strip_suffix(final_name, suffix))
            path = root / rel
            item = PartialFile(_tar_name(stem), kind, path, path.stat().st_size)
            (status.stale_partial if stem in done else status.partial).append(item)
    journal_root = partial_root / "journal"
    if journal_root.is_dir():
        status.journals = [
            _tar_name(rel.with_suffix("")) for rel in _walk_files(journal_root, ".journal")
        ]

    summary = summary_path(out)
    if summary.exists():
        try:
            status.summary = json.loads(summary.read_text(encoding="utf-8"))
        except ValueError as exc:
            status.summary = {"unreadable": f"{summary}: {exc}"}
    return status


# ---------------------------------------------------------------------- verify


@dataclass
class TarCheck:
    """One input tar against its output.

    For a problems table: ``tar``, ``expected``, ``lines``, ``error_records``
    (+ ``tar_errors``), ``lost``, ``duplicates``, ``unknown``, and ``notes()``.
    """

    tar: str
    expected: int
    """Samples in the input tar (before any damage), good or not."""
    lines: int = 0
    """Tokens records (lines or rows) with a readable key."""
    error_records: int = 0
    """Error records with a sample key."""
    tar_errors: int = 0
    formats: list[str] = field(default_factory=list)
    """Formats of the tar's tokens files (none: output missing; two: a conflict)."""
    output_missing: bool = False
    unreadable: str | None = None
    """Why a tokens file could not be read at all (its samples count as lost)."""
    input_damage: str | None = None
    damage_unrecorded: bool = False
    """The input tar is damaged but the output has no tar-level error record for it."""
    corrupt_lines: int = 0
    """Records or error lines without a readable key."""
    lost_keys: list[str] = field(default_factory=list)
    duplicate_keys: list[str] = field(default_factory=list)
    unknown_keys: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.expected if self.output_missing else len(self.lost_keys)

    @property
    def duplicates(self) -> int:
        return len(self.duplicate_keys)

    @property
    def unknown(self) -> int:
        return len(self.unknown_keys)

    @property
    def both_formats(self) -> bool:
        return len(self.formats) > 1

    @property
    def ok(self) -> bool:
        return not (
            self.output_missing
            or self.unreadable
            or self.both_formats
            or self.lost_keys
            or self.duplicate_keys
            or self.unknown_keys
            or self.corrupt_lines
            or self.damage_unrecorded
        )

    def notes(self, examples: int = 2) -> list[str]:
        """Short human notes on what is wrong (empty when ok)."""
        notes = []
        if self.output_missing:
            notes.append("no output")
        if self.unreadable:
            notes.append(f"output unreadable: {self.unreadable}")
        if self.both_formats:
            notes.append(f"done in {' and '.join(self.formats)}: keep one")
        if self.corrupt_lines:
            notes.append(f"{self.corrupt_lines} unreadable lines")
        if self.damage_unrecorded:
            notes.append(f"input damaged ({self.input_damage}) but not recorded")
        keys = (self.lost_keys or self.duplicate_keys or self.unknown_keys)[:examples]
        if keys:
            notes.append("e.g. " + ", ".join(keys))
        return notes

    def to_dict(self, max_keys: int = 20) -> dict[str, Any]:
        result: dict[str, Any] = {
            "ok": self.ok,
            "expected": self.expected,
            "lines": self.lines,
            "error_records": self.error_records,
            "tar_errors": self.tar_errors,
            "formats": self.formats,
            "lost": self.lost,
        }
        for name in ("output_missing", "both_formats", "damage_unrecorded"):
            if getattr(self, name):
                result[name] = True
        for name in ("unreadable", "input_damage", "corrupt_lines"):
            if getattr(self, name):
                result[name] = getattr(self, name)
        for name in ("lost_keys", "duplicate_keys", "unknown_keys"):
            keys = getattr(self, name)
            if keys:
                result[name] = keys[:max_keys]
                if len(keys) > max_keys:
                    result[name + "_total"] = len(keys)
        return result


@dataclass
class VerifyReport:
    input_dir: Location
    output_dir: Location
    tars: list[TarCheck]
    from_index: int = 0
    to_index: int | None = None
    recursive: bool = False
    """The selection of input tars that was checked."""

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tars)

    @property
    def missing_tars(self) -> list[str]:
        return [t.tar for t in self.tars if t.output_missing]

    @property
    def samples_expected(self) -> int:
        return sum(t.expected for t in self.tars)

    @property
    def lost_samples(self) -> int:
        return sum(t.lost for t in self.tars)

    @property
    def duplicate_keys(self) -> int:
        return sum(t.duplicates for t in self.tars)

    @property
    def unknown_keys(self) -> int:
        return sum(t.unknown for t in self.tars)

    @property
    def damaged_inputs(self) -> list[str]:
        return [t.tar for t in self.tars if t.input_damage]

    @property
    def problems(self) -> list[TarCheck]:
        return [t for t in self.tars if not t.ok]

    @property
    def selection(self) -> str:
        """The range checked, e.g. "tars [0, end), this directory only"."""
        end = "end" if self.to_index is None else str(self.to_index)
        where = "with subdirectories" if self.recursive else "this directory only"
        return f"tars [{self.from_index}, {end}), {where}"

    def to_dict(self, max_keys: int = 20) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "input_dir": str(self.input_dir),
            "output_dir": str(self.output_dir),
            "from_index": self.from_index,
            "to_index": self.to_index,
            "recursive": self.recursive,
            "tars": len(self.tars),
            "tars_missing_output": self.missing_tars,
            "samples_expected": self.samples_expected,
            "lines": sum(t.lines for t in self.tars),
            "error_records": sum(t.error_records + t.tar_errors for t in self.tars),
            "lost_samples": self.lost_samples,
            "duplicate_keys": self.duplicate_keys,
            "unknown_keys": self.unknown_keys,
            "damaged_inputs": self.damaged_inputs,
            "problems": {t.tar: t.to_dict(max_keys) for t in self.problems},
        }


def check_tar(
    input_dir: Location | str,
    output_dir: Location | str,
    tar_path: Location | str,
    *,
    files: OutputFiles | None = None,
    access: Access | None = None,
) -> TarCheck:
    """Compare one input tar's sample keys with its output's records and error records.

    Tokens files of every format present are read, so a tar done in both formats
    shows its samples as duplicates (and ``both_formats``). ``files``: the output's
    files, when the caller has them already (one listing for many tars).
    """
    files = files if files is not None else output_files(as_location(output_dir), access)
    paths = tar_output_paths(Path("."), input_dir, tar_path)
    scan = scan_tar(tar_path, access=access)
    expected = Counter(scan.keys)
    check = TarCheck(str(paths.rel_tar), scan.count, formats=paths.done_formats(files.exists))
    if scan.damage is not None:
        check.input_damage = scan.damage.reason
    if not check.formats:
        check.output_missing = True
        return check
    found: Counter[str] = Counter()
    for output_format in check.formats:
        try:
            tokens = read_keys(files.locate(paths.rel_tokens_in(output_format)), access)
        except UnreadableOutput as exc:
            check.unreadable = f"{paths.rel_tokens_in(output_format)}: {exc}"
            continue
        found.update(tokens.keys)
        check.lines += len(tokens.keys)
        check.corrupt_lines += tokens.corrupt
    if files.exists(paths.rel_errors):
        errors = read_error_keys(files.locate(paths.rel_errors), access)
        check.tar_errors = errors.tar_level
        check.corrupt_lines += errors.corrupt
        check.error_records = len(errors.keys)
        found.update(errors.keys)
    check.damage_unrecorded = scan.damage is not None and check.tar_errors == 0
    for key, n in expected.items():
        check.lost_keys.extend([key] * max(n - found.get(key, 0), 0))
    for key, n in found.items():
        if key not in expected:
            check.unknown_keys.append(key)
        elif n > expected[key]:
            check.duplicate_keys.extend([key] * (n - expected[key]))
    return check


def verify(
    input_dir: Location | str,
    output_dir: Location | str,
    from_index: int = 0,
    to_index: int | None = None,
    recursive: bool = False,
    access: Access | None = None,
) -> VerifyReport:
    """Check the selected input tars against ``output_dir``, in either format; either may
    be a URL (raises InputError like discover_tars)."""
    input_dir, output_dir = as_location(input_dir), as_location(output_dir)
    tars = discover_tars(
        input_dir,
        from_index,
        to_index,
        recursive,
        reserved_top_dirs=RESERVED_TOP_DIRS,
        access=access,
    )
    files = output_files(output_dir, access)
    checks = [check_tar(input_dir, output_dir, tar, files=files, access=access) for tar in tars]
    return VerifyReport(input_dir, output_dir, checks, from_index, to_index, recursive)

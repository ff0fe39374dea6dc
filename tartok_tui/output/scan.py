"""An output directory's state from one listing of its files: ``tartok-tui status``.

Which tars are done (their tokens file exists, ``X.jsonl`` or ``X.parquet``) and how many
bytes they hold, which have error records (an errors file exists only when there are
some), which have a commit record, what partial files, journals and half-committed error
files are lying around, and which tars have tokens files in both formats (a conflict).
Nothing per tar is read: a local output is walked once (a stat per file), an output URL
listed once (``output.files``), and the last run summary is read. An output URL holds no
partial files or journals (those stay in the writer's local spool).

``counts`` adds records and error records per done tar, which need reads: records from
the tar's commit record (``output.tarmeta``; a tar committed before records existed has
its tokens file counted: JSONL lines, or a Parquet footer), error records from its errors
file. They are read on a bounded pool of threads (``output.parallel``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tartok_tui.output.claim import ClaimStatus, read_claims
from tartok_tui.output.committed import strip_suffix
from tartok_tui.output.files import ListedFiles, LocalFiles, OutputFiles, output_files
from tartok_tui.output.manifest import MANIFEST_NAME
from tartok_tui.output.parallel import DEFAULT_JOBS, Progress, in_parallel
from tartok_tui.output.paths import (
    ERRORS_DIR,
    ERRORS_SUFFIX,
    META_DIR,
    OUTPUT_FORMATS,
    PARTIAL_DIR,
    RESERVED_TOP_DIRS,
    SUMMARY_NAME,
    format_of,
)
from tartok_tui.output.read import UnreadableOutput, count_records, read_error_keys
from tartok_tui.output.tarmeta import META_SUFFIX, TarMeta
from tartok_tui.storage import Access, Location, as_location


def _tar_name(stem: PurePosixPath) -> str:
    """The tar an output stem belongs to (``sub/X`` -> ``sub/X.tar``): status reads the
    output alone, so a ``.tar.gz`` input is named ``.tar`` here too."""
    return f"{stem}.tar"


@dataclass
class DoneTar:
    """A tar whose tokens file exists."""

    tar: str
    """Relative to the input directory, e.g. ``EN/EN-B000000.tar``."""
    format: str = "jsonl"
    """The format of its tokens file (the first of OUTPUT_FORMATS present)."""
    size: int = 0
    """Bytes of that tokens file."""
    has_errors: bool = False
    """It has an errors file (written only when there are error records)."""
    has_record: bool = False
    """It has a commit record (``meta/``)."""
    lines: int | None = None
    """Tokens records, lines of JSONL or rows of Parquet (None: not counted)."""
    errors: int | None = None
    """Error records of samples (None: not counted)."""
    tar_errors: int | None = None
    """Error records about the tar itself, damage (None: not counted)."""
    unreadable: str | None = None
    """Why the tokens file or the commit record could not be read (counting only)."""
    fingerprint: str | None = None
    """The run fingerprint in its commit record (counting only; None: not read or none)."""


@dataclass
class PartialFile:
    tar: str
    kind: str
    """The format of a tokens file ("jsonl", "parquet"), "errors", or "meta"."""
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
    wrote them; keep one). Their DoneTar is the first of OUTPUT_FORMATS."""
    summary: dict[str, Any] | None = None
    """The last run-summary.json, if any."""
    counted: bool = False
    """Records and error records were counted (else they are None)."""
    claims: list[ClaimStatus] = field(default_factory=list)
    """The claims of runs writing here now (or gone without removing theirs)."""
    manifest: dict[str, Any] | None = None
    """The output's run manifest as written (None: none; see ``output.manifest``)."""

    @property
    def tars_done(self) -> int:
        return len(self.done)

    @property
    def tokens_bytes(self) -> int:
        return sum(t.size for t in self.done)

    @property
    def records(self) -> int:
        """Done tars with a commit record."""
        return sum(t.has_record for t in self.done)

    @property
    def lines(self) -> int | None:
        return sum(t.lines or 0 for t in self.done) if self.counted else None

    @property
    def error_records(self) -> int | None:
        if not self.counted:
            return None
        return sum((t.errors or 0) + (t.tar_errors or 0) for t in self.done)

    @property
    def with_errors(self) -> list[DoneTar]:
        return [t for t in self.done if t.has_errors]

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
            "tokens_bytes": self.tokens_bytes,
            "tars_with_records": self.records,
            "counted": self.counted,
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
                t.tar: {"lines": t.lines, "errors": t.errors, "format": t.format, "bytes": t.size}
                for t in self.done
            },
            "summary": self.summary,
            "claims": [c.to_dict() for c in self.claims],
            "manifest": self.manifest,
            "other_fingerprints": self.other_fingerprints,
        }

    @property
    def other_fingerprints(self) -> list[str]:
        """Counted tars whose commit record names another run fingerprint than the
        manifest's: tokens of another model or precision in this output."""
        expected = (self.manifest or {}).get("fingerprint")
        return [
            t.tar
            for t in self.done
            if expected and t.fingerprint is not None and t.fingerprint != expected
        ]


# ---------------------------------------------------------------------- the listing


def _walk(root: Path) -> dict[PurePosixPath, int]:
    """Every file under ``root``, relative to it -> its size: a local output's listing."""
    sizes: dict[PurePosixPath, int] = {}
    for dirpath, _, filenames in os.walk(root):
        rel_dir = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        for name in filenames:
            try:
                sizes[rel_dir / name] = os.stat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:  # renamed or removed by a run meanwhile
                continue
    return sizes


def _listing(files: OutputFiles) -> dict[PurePosixPath, int]:
    if isinstance(files, ListedFiles):
        return files.sizes
    assert isinstance(files, LocalFiles)
    return _walk(files.root)


def _partial(status: OutputStatus, key: PurePosixPath, size: int) -> PartialFile | None:
    """The partial file or journal at ``key`` (under ``.partial/`` of a local output):
    a journal is listed on ``status``; a partial file is returned."""
    area, rel = key.parts[1], PurePosixPath(*key.parts[2:])
    if area == "journal" and rel.name.endswith(".journal"):
        status.journals.append(_tar_name(rel.with_suffix("")))
        return None
    if area not in ("out", "errors") or not rel.name.endswith(".part"):
        return None
    # "X.parquet.<host>-<pid>-<lease>.part" -> "X.parquet" -> "X"
    final_name = rel.name.rsplit(".", 2)[0]
    if area == "errors":
        kind, suffix = "errors", ERRORS_SUFFIX
    elif rel.parts[0] == META_DIR:
        kind, suffix, rel = "meta", META_SUFFIX, PurePosixPath(*rel.parts[1:])
    else:
        kind = format_of(final_name) or "unknown"
        suffix = f".{kind}"
    stem = rel.with_name(strip_suffix(final_name, suffix))
    return PartialFile(_tar_name(stem), kind, Path(status.output_dir) / key, size)


def _from_listing(status: OutputStatus, sizes: dict[PurePosixPath, int]) -> None:
    done: dict[PurePosixPath, dict[str, int]] = {}
    error_stems: set[PurePosixPath] = set()
    record_stems: set[PurePosixPath] = set()
    partials: list[tuple[PurePosixPath, PartialFile]] = []
    for key in sorted(sizes, key=lambda p: p.parts):
        top = key.parts[0] if len(key.parts) > 1 else None
        rel = PurePosixPath(*key.parts[1:]) if top else key
        if top == ERRORS_DIR and key.name.endswith(ERRORS_SUFFIX):
            error_stems.add(rel.with_name(strip_suffix(rel.name, ERRORS_SUFFIX)))
        elif top == META_DIR and key.name.endswith(META_SUFFIX):
            record_stems.add(rel.with_name(strip_suffix(rel.name, META_SUFFIX)))
        elif top == PARTIAL_DIR and len(key.parts) > 2 and isinstance(status.output_dir, Path):
            part = _partial(status, key, sizes[key])
            if part is not None:
                partials.append((PurePosixPath(part.tar).with_suffix(""), part))
        elif top not in RESERVED_TOP_DIRS and (output_format := format_of(key.name)):
            stem = key.with_name(strip_suffix(key.name, "." + output_format))
            done.setdefault(stem, {})[output_format] = sizes[key]
    for stem, formats in done.items():
        output_format = min(formats, key=OUTPUT_FORMATS.index)
        status.done.append(
            DoneTar(
                _tar_name(stem),
                output_format,
                formats[output_format],
                has_errors=stem in error_stems,
                has_record=stem in record_stems,
            )
        )
        if len(formats) > 1:
            status.both_formats.append(_tar_name(stem))
    status.orphan_errors = sorted(
        (_tar_name(s) for s in error_stems if s not in done), key=lambda t: PurePosixPath(t).parts
    )
    for stem, part in partials:
        (status.stale_partial if stem in done else status.partial).append(part)


def _summary(files: OutputFiles, sizes: dict[PurePosixPath, int]) -> dict[str, Any] | None:
    if PurePosixPath(SUMMARY_NAME) not in sizes:
        return None
    try:
        return json.loads(files.read_bytes(PurePosixPath(SUMMARY_NAME)))
    except ValueError as exc:
        return {"unreadable": f"{files.locate(PurePosixPath(SUMMARY_NAME))}: {exc}"}


def _manifest(files: OutputFiles, sizes: dict[PurePosixPath, int]) -> dict[str, Any] | None:
    key = PurePosixPath(MANIFEST_NAME)
    if key not in sizes:
        return None
    try:
        data = json.loads(files.read_bytes(key))
    except ValueError as exc:
        return {"unreadable": f"{files.locate(key)}: {exc}"}
    return data if isinstance(data, dict) else {"unreadable": f"{files.locate(key)}: not an object"}


# ---------------------------------------------------------------------- counting


def _count(tar: DoneTar, files: OutputFiles, access: Access | None) -> None:
    """Records (the commit record, else the tokens file) and error records of one tar."""
    stem = PurePosixPath(tar.tar).with_suffix("")
    tar.errors = tar.tar_errors = 0
    if tar.has_errors:
        errors_key = PurePosixPath(ERRORS_DIR) / f"{stem}{ERRORS_SUFFIX}"
        found = read_error_keys(files.locate(errors_key), access)
        tar.errors, tar.tar_errors = len(found.keys) + found.corrupt, found.tar_level
    if tar.has_record:
        record_key = PurePosixPath(META_DIR) / f"{stem}{META_SUFFIX}"
        try:
            meta = TarMeta.from_bytes(files.read_bytes(record_key))
        except ValueError as exc:
            tar.unreadable = f"{record_key}: {exc}"
        else:
            tar.fingerprint = meta.fingerprint
            if meta.format == tar.format:
                tar.lines = meta.records
                return
    try:
        tar.lines = count_records(files.locate(PurePosixPath(f"{stem}.{tar.format}")), access)
    except UnreadableOutput as exc:
        tar.unreadable = str(exc)


def scan_output(
    output_dir: Location | str,
    access: Access | None = None,
    *,
    counts: bool = False,
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
) -> OutputStatus:
    """The state of ``output_dir`` (a directory or URL) from one listing of its files;
    with ``counts``, records and error records per done tar too (``jobs`` tars read at
    once, ``progress`` told how many are done)."""
    location = as_location(output_dir)
    files = output_files(location, access)
    status = OutputStatus(location)
    sizes = _listing(files)
    _from_listing(status, sizes)
    status.summary = _summary(files, sizes)
    status.claims = read_claims(location, access)
    status.manifest = _manifest(files, sizes)
    if counts:
        in_parallel(lambda tar: _count(tar, files, access), status.done, jobs, progress)
        status.counted = True
    return status

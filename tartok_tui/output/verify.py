"""``tartok-tui verify``: every sample of every selected input tar appears exactly once in
the output, as a record or as an error record with its key, whatever the format.

What a tar's samples are comes from its commit record (``OUTPUT/meta/sub/X.json``, see
``output.tarmeta``): the keys the worker found in the input, and the input's size and ETag
(object storage) or mtime (local) at the time. By default only the output is read: the
input is listed once (locally, a stat per tar) to see that each tar is still the one that
was tokenized, and no input data is read. A tar without a record (committed by an older
version, or whose record is unreadable) falls back to a header scan of its input.

``deep`` scans every input tar's headers again (``scan_tar(ranged=True)``: on object
storage a few KiB per sample by ranged requests; a compressed tar is streamed whole), so an
input whose content changed while its size stayed the same is found too (its keys differ
from the recorded ones, or from the output).

Tars are checked on a bounded pool of threads (``output.parallel``), each from one
listing of the output.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tartok_tui.output.files import OutputFiles, output_files
from tartok_tui.output.manifest import MANIFEST_NAME, Manifest
from tartok_tui.output.parallel import DEFAULT_JOBS, Progress, in_parallel
from tartok_tui.output.paths import RESERVED_TOP_DIRS, TarOutputPaths, tar_output_paths
from tartok_tui.output.read import UnreadableOutput, read_error_keys, read_keys
from tartok_tui.output.tarmeta import InputIdentity, TarMeta, identity_of, input_identity, rel_meta
from tartok_tui.shards.discover import InputError, discover_shards
from tartok_tui.shards.reader import TarScan, scan_tar
from tartok_tui.storage import Access, Location, as_location, is_url


@dataclass
class TarCheck:
    """One input tar against its output.

    For a problems table: ``tar``, ``expected``, ``lines``, ``error_records``
    (+ ``tar_errors``), ``lost``, ``duplicates``, ``unknown``, and ``notes()``.
    """

    tar: str
    expected: int | None = None
    """Samples in the input tar (before any damage), good or not; None when unknown (no
    output and no commit record, and the input not scanned)."""
    keys_from: str = "record"
    """Where the expected keys came from: "record" (the commit record), "scan" (the input's
    headers: no record, or deep), or "none"."""
    recorded_from: str | None = None
    """Where the record's keys came from: "scan" (the worker's own header scan) or
    "stream" (the samples its reader met: object storage); None without a record."""
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
    record_unreadable: str | None = None
    """Why the commit record could not be read (the input was scanned instead)."""
    input_changed: str | None = None
    """Why the input is not the tar that was tokenized: its size, ETag or mtime differ from
    the record's, or (deep) its keys differ from the recorded ones."""
    other_fingerprint: str | None = None
    """The run fingerprint in the tar's commit record when it is not the output manifest's:
    its tokens were made by another model, precision or codec (a mixed output)."""
    input_note: str | None = None
    """Not a problem: the input's ETag or mtime differ from the record's, but a deep scan
    found the recorded keys in an input of the recorded size."""
    input_damage: str | None = None
    """Known from a scan only."""
    damage_unrecorded: bool = False
    """The input tar is damaged but the output has no tar-level error record for it."""
    compressed: bool = False
    """The input was scanned by reading it through (a compressed tar cannot be range-read)."""
    corrupt_lines: int = 0
    """Records or error lines without a readable key."""
    lost_keys: list[str] = field(default_factory=list)
    duplicate_keys: list[str] = field(default_factory=list)
    unknown_keys: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        if self.output_missing:
            return self.expected or 0
        return len(self.lost_keys)

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
            or self.record_unreadable
            or self.input_changed
            or self.other_fingerprint
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
            notes.append("no output" + (" (samples not counted)" if self.expected is None else ""))
        if self.input_changed:
            notes.append(f"input changed: {self.input_changed}")
        if self.other_fingerprint:
            notes.append(f"tokens of another model or precision ({self.other_fingerprint})")
        if self.unreadable:
            notes.append(f"output unreadable: {self.unreadable}")
        if self.record_unreadable:
            notes.append(f"commit record unreadable: {self.record_unreadable}")
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
            "keys_from": self.keys_from,
            "lines": self.lines,
            "error_records": self.error_records,
            "tar_errors": self.tar_errors,
            "formats": self.formats,
            "lost": self.lost,
        }
        for name in ("output_missing", "both_formats", "damage_unrecorded", "compressed"):
            if getattr(self, name):
                result[name] = True
        for name in (
            "unreadable",
            "record_unreadable",
            "input_changed",
            "other_fingerprint",
            "input_note",
            "input_damage",
            "corrupt_lines",
        ):
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
    deep: bool = False
    """Every input was scanned again (else only those without a commit record)."""
    fingerprint: str | None = None
    """The output manifest's run fingerprint (None: the output has no manifest)."""

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tars)

    @property
    def missing_tars(self) -> list[str]:
        return [t.tar for t in self.tars if t.output_missing]

    @property
    def samples_expected(self) -> int:
        return sum(t.expected or 0 for t in self.tars)

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
    def mixed_tars(self) -> list[str]:
        """Tars whose tokens were made otherwise than the manifest says."""
        return [t.tar for t in self.tars if t.other_fingerprint]

    @property
    def changed_inputs(self) -> list[str]:
        return [t.tar for t in self.tars if t.input_changed]

    @property
    def reader_keys(self) -> int:
        """Tars checked against recorded keys that their worker's reader met (object
        storage), not an independent scan of the input: --deep checks those too."""
        return sum(t.keys_from == "record" and t.recorded_from == "stream" for t in self.tars)

    @property
    def modified_inputs(self) -> list[str]:
        """Inputs whose ETag or mtime changed while a deep scan found the recorded keys."""
        return [t.tar for t in self.tars if t.input_note]

    @property
    def scanned(self) -> int:
        """Tars whose input headers were read (all with ``deep``; else those without a
        readable commit record)."""
        return sum(t.keys_from == "scan" for t in self.tars)

    @property
    def streamed(self) -> int:
        """Scanned tars that had to be read through (compressed)."""
        return sum(t.compressed for t in self.tars)

    @property
    def uncounted(self) -> int:
        """Tars without output whose samples are not known (no record, no scan)."""
        return sum(t.output_missing and t.expected is None for t in self.tars)

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
            "deep": self.deep,
            "tars": len(self.tars),
            "tars_scanned": self.scanned,
            "tars_streamed": self.streamed,
            "tars_with_reader_keys": self.reader_keys,
            "tars_missing_output": self.missing_tars,
            "tars_uncounted": self.uncounted,
            "samples_expected": self.samples_expected,
            "lines": sum(t.lines for t in self.tars),
            "error_records": sum(t.error_records + t.tar_errors for t in self.tars),
            "lost_samples": self.lost_samples,
            "duplicate_keys": self.duplicate_keys,
            "unknown_keys": self.unknown_keys,
            "changed_inputs": self.changed_inputs,
            "fingerprint": self.fingerprint,
            "other_fingerprint_tars": self.mixed_tars,
            "modified_inputs_same_keys": self.modified_inputs,
            "damaged_inputs": self.damaged_inputs,
            "problems": {t.tar: t.to_dict(max_keys) for t in self.problems},
        }


# ---------------------------------------------------------------------- one tar


@dataclass(frozen=True)
class Verifying:
    """What checking one tar needs: the output's files (one listing), the input's listing
    entries (a URL input), and how to read."""

    input_dir: Location
    files: OutputFiles
    listed: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Input URL -> its listing entry (size, ETag); empty for a local input."""
    access: Access | None = None
    deep: bool = False
    fingerprint: str | None = None
    """The output manifest's; a commit record naming another is a problem."""

    def identity(self, tar: Location) -> InputIdentity:
        """What the input tar is now: from the listing (a URL), else a stat."""
        entry = self.listed.get(str(tar)) if is_url(tar) else None
        return identity_of(entry) if entry else input_identity(tar, self.access)


def _record(run: Verifying, paths: TarOutputPaths, check: TarCheck) -> TarMeta | None:
    """The tar's commit record; None when it has none or it is unreadable (noted)."""
    key = rel_meta(paths)
    if not run.files.exists(key):
        return None
    try:
        return TarMeta.from_bytes(run.files.read_bytes(key))
    except ValueError as exc:
        check.record_unreadable = str(exc)
        return None


def _scanned(check: TarCheck, scan: TarScan) -> list[str]:
    """The scan's keys, noting its damage."""
    check.keys_from = "scan"
    check.compressed = scan.compressed
    if scan.damage is not None:
        check.input_damage = scan.damage.reason
    return scan.keys


def _compare_input(
    check: TarCheck, meta: TarMeta, now: InputIdentity | None, scan: TarScan | None
) -> None:
    """Whether the input is still the tar its record describes: its size and ETag or
    mtime now, and with a scan its keys. An ETag or mtime alone that differs where a scan
    finds the recorded keys in an input of the recorded size is a note, not a problem (a
    copy that did not keep mtimes, a re-upload in other parts)."""
    reasons = []
    if scan is not None and scan.keys != meta.keys:
        now_keys, recorded = set(scan.keys), set(meta.keys)
        reasons.append(
            f"its keys differ from those recorded at commit ({len(now_keys - recorded)} new, "
            f"{len(recorded - now_keys)} gone)"
        )
    if meta.input is not None and now is not None and (changed := meta.input.differs(now)):
        if scan is not None and not reasons and now.size == meta.input.size:
            check.input_note = f"{changed}; the recorded keys are all there"
        else:
            reasons.insert(0, changed)
    check.input_changed = "; ".join(reasons) or None


def _output_keys(run: Verifying, paths: TarOutputPaths, check: TarCheck) -> Counter[str]:
    """The keys of every tokens file (all formats present) and of the errors file."""
    found: Counter[str] = Counter()
    for output_format in check.formats:
        rel = paths.rel_tokens_in(output_format)
        try:
            tokens = read_keys(run.files.locate(rel), run.access)
        except UnreadableOutput as exc:
            check.unreadable = f"{rel}: {exc}"
            continue
        found.update(tokens.keys)
        check.lines += len(tokens.keys)
        check.corrupt_lines += tokens.corrupt
    if run.files.exists(paths.rel_errors):
        errors = read_error_keys(run.files.locate(paths.rel_errors), run.access)
        check.tar_errors = errors.tar_level
        check.corrupt_lines += errors.corrupt
        check.error_records = len(errors.keys)
        found.update(errors.keys)
    return found


def _match(check: TarCheck, expected: Counter[str], found: Counter[str]) -> None:
    for key, n in expected.items():
        check.lost_keys.extend([key] * max(n - found.get(key, 0), 0))
    for key, n in found.items():
        if key not in expected:
            check.unknown_keys.append(key)
        elif n > expected[key]:
            check.duplicate_keys.extend([key] * (n - expected[key]))


def check_tar(tar: Location, run: Verifying) -> TarCheck:
    """Compare one input tar's sample keys (recorded, or scanned) with its output's
    records and error records.

    Tokens files of every format present are read, so a tar done in both formats shows
    its samples as duplicates (and ``both_formats``).
    """
    paths = tar_output_paths(Path("."), run.input_dir, tar)
    check = TarCheck(str(paths.rel_tar), formats=paths.done_formats(run.files.exists))
    meta = _record(run, paths, check)
    expected = meta.keys if meta is not None else None
    check.recorded_from = meta.keys_source if meta is not None else None
    if meta is not None and run.fingerprint is not None and meta.fingerprint != run.fingerprint:
        check.other_fingerprint = meta.fingerprint
    scan = None
    if run.deep or (meta is None and check.formats):
        scan = scan_tar(tar, access=run.access, ranged=True)
        expected = _scanned(check, scan)
    if meta is not None:
        now = run.identity(tar) if meta.input is not None else None
        _compare_input(check, meta, now, scan)
    if expected is None:
        check.keys_from = "none"
    else:
        check.expected = len(expected)
    if not check.formats:
        check.output_missing = True
        return check
    _match(check, Counter(expected), _output_keys(run, paths, check))
    check.damage_unrecorded = check.input_damage is not None and check.tar_errors == 0
    return check


# ---------------------------------------------------------------------- every tar


def verify(
    input_dir: Location | str,
    output_dir: Location | str,
    from_index: int = 0,
    to_index: int | None = None,
    recursive: bool = False,
    access: Access | None = None,
    *,
    deep: bool = False,
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check the selected input tars against ``output_dir``, in either format; either may
    be a URL (raises InputError like discover_shards). ``jobs`` tars are checked at once;
    ``progress`` is told how many are done."""
    input_dir, output_dir = as_location(input_dir), as_location(output_dir)
    found = discover_shards(
        input_dir,
        from_index,
        to_index,
        recursive,
        reserved_top_dirs=RESERVED_TOP_DIRS,
        access=access,
    )
    files = output_files(output_dir, access)
    fingerprint = _manifest_fingerprint(files)
    run = Verifying(input_dir, files, found.listed, access, deep, fingerprint)
    checks = in_parallel(lambda tar: check_tar(tar, run), found.tars, jobs, progress)
    return VerifyReport(
        input_dir, output_dir, checks, from_index, to_index, recursive, deep, fingerprint
    )


def _manifest_fingerprint(files: OutputFiles) -> str | None:
    """The output manifest's fingerprint; None without one. An unreadable manifest is an
    InputError: nothing could be said about mixed tokens."""
    key = PurePosixPath(MANIFEST_NAME)
    if not files.exists(key):
        return None
    try:
        return Manifest.from_bytes(files.read_bytes(key)).fingerprint
    except ValueError as exc:
        raise InputError(f"{files.locate(key)}: {exc}") from None

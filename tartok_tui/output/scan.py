"""An output directory's state from its files alone, and a check of it against the inputs.

``scan_output`` backs ``tartok-tui status``: which tars are done (their JSONL
exists), how many lines and error records each has, what partial files,
journals and half-committed error files are lying around. ``verify`` backs
``tartok-tui verify``: every sample of every selected input tar must appear
exactly once in the output, as a line or as an error record with its key.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tartok_tui.output.paths import (
    ERRORS_DIR,
    PARTIAL_DIR,
    RESERVED_TOP_DIRS,
    summary_path,
    tar_output_paths,
)
from tartok_tui.shards.discover import discover_tars
from tartok_tui.shards.reader import scan_tar

_KEY_PREFIX = b'{"key": '
_DECODER = json.JSONDecoder()


def _count_lines(path: Path) -> int:
    count = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _iter_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        for line in f:
            yield line.rstrip(b"\n")


def _line_key(line: bytes) -> str | None:
    """The key of a tokens line; None when the line is not a well-formed record.

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


def _read_errors(path: Path) -> tuple[list[str], int, int]:
    """(keys of sample error records, tar-level records, unreadable lines) of an errors file."""
    keys: list[str] = []
    tar_level = corrupt = 0
    for line in _iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            corrupt += 1
            continue
        key = record.get("key") if isinstance(record, dict) else None
        if isinstance(key, str):
            keys.append(key)
        else:
            tar_level += 1
    return keys, tar_level, corrupt


def _tar_name(rel_jsonl: PurePosixPath) -> str:
    return str(rel_jsonl.with_suffix(".tar"))


# ---------------------------------------------------------------------- status


@dataclass
class DoneTar:
    """A tar whose JSONL exists."""

    tar: str
    """Relative to the input directory, e.g. ``EN/EN-B000000.tar``."""
    lines: int
    errors: int
    """Error records of samples."""
    tar_errors: int
    """Error records about the tar itself (damage)."""


@dataclass
class PartialFile:
    tar: str
    kind: str
    """"jsonl" or "errors"."""
    path: Path
    size: int


@dataclass
class OutputStatus:
    output_dir: Path
    done: list[DoneTar] = field(default_factory=list)
    partial: list[PartialFile] = field(default_factory=list)
    """Partial files of tars with no JSONL yet: in progress, or left by a killed attempt."""
    stale_partial: list[PartialFile] = field(default_factory=list)
    """Partial files of tars that are done anyway: leftovers, safe to delete."""
    journals: list[str] = field(default_factory=list)
    """Tars with an isolation journal (a poison tar being, or having been, isolated)."""
    orphan_errors: list[str] = field(default_factory=list)
    """Tars with an errors file but no JSONL (an attempt died between the two renames)."""
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir),
            "tars_done": self.tars_done,
            "lines": self.lines,
            "error_records": self.error_records,
            "tars_with_errors": {
                t.tar: {"errors": t.errors, "tar_errors": t.tar_errors} for t in self.with_errors
            },
            "partial_tars": self.partial_tars,
            "stale_partial_files": [str(p.path) for p in self.stale_partial],
            "journals": self.journals,
            "orphan_errors": self.orphan_errors,
            "done": {t.tar: {"lines": t.lines, "errors": t.errors} for t in self.done},
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


def scan_output(output_dir: Path | str) -> OutputStatus:
    """The state of ``output_dir`` from its files alone."""
    out = Path(output_dir)
    status = OutputStatus(out)
    done_jsonl: set[PurePosixPath] = set()
    for dirpath, dirnames, filenames in os.walk(out):
        rel_dir = PurePosixPath(Path(dirpath).relative_to(out).as_posix())
        if rel_dir == PurePosixPath("."):
            dirnames[:] = [d for d in dirnames if d not in RESERVED_TOP_DIRS]
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".jsonl"):
                continue
            rel = rel_dir / name
            done_jsonl.add(rel)
            errors_path = out / ERRORS_DIR / rel
            errors = tar_errors = 0
            if errors_path.exists():
                keys, tar_errors, corrupt = _read_errors(errors_path)
                errors = len(keys) + corrupt
            status.done.append(DoneTar(_tar_name(rel), _count_lines(out / rel), errors, tar_errors))
    status.done.sort(key=lambda t: PurePosixPath(t.tar).parts)

    errors_root = out / ERRORS_DIR
    if errors_root.is_dir():
        for rel in _walk_files(errors_root, ".jsonl"):
            if rel not in done_jsonl:
                status.orphan_errors.append(_tar_name(rel))

    partial_root = out / PARTIAL_DIR
    for kind, sub in (("jsonl", "out"), ("errors", "errors")):
        root = partial_root / sub
        if not root.is_dir():
            continue
        for rel in _walk_files(root, ".part"):
            # "X.jsonl.<host>-<pid>-<lease>.part" -> "X.jsonl"
            rel_jsonl = rel.with_name(rel.name.rsplit(".", 2)[0])
            path = root / rel
            item = PartialFile(_tar_name(rel_jsonl), kind, path, path.stat().st_size)
            (status.stale_partial if rel_jsonl in done_jsonl else status.partial).append(item)
    journal_root = partial_root / "journal"
    if journal_root.is_dir():
        status.journals = [
            str(rel.with_suffix(".tar")) for rel in _walk_files(journal_root, ".journal")
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
    """One input tar against its output."""

    tar: str
    expected: int
    """Samples in the input tar (before any damage), good or not."""
    lines: int = 0
    error_records: int = 0
    """Error records with a sample key."""
    tar_errors: int = 0
    output_missing: bool = False
    input_damage: str | None = None
    damage_unrecorded: bool = False
    """The input tar is damaged but the output has no tar-level error record for it."""
    corrupt_lines: int = 0
    lost_keys: list[str] = field(default_factory=list)
    duplicate_keys: list[str] = field(default_factory=list)
    unknown_keys: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.expected if self.output_missing else len(self.lost_keys)

    @property
    def ok(self) -> bool:
        return not (
            self.output_missing
            or self.lost_keys
            or self.duplicate_keys
            or self.unknown_keys
            or self.corrupt_lines
            or self.damage_unrecorded
        )

    def to_dict(self, max_keys: int = 20) -> dict[str, Any]:
        result: dict[str, Any] = {
            "ok": self.ok,
            "expected": self.expected,
            "lines": self.lines,
            "error_records": self.error_records,
            "tar_errors": self.tar_errors,
        }
        if self.output_missing:
            result["output_missing"] = True
        if self.input_damage:
            result["input_damage"] = self.input_damage
        if self.damage_unrecorded:
            result["damage_unrecorded"] = True
        if self.corrupt_lines:
            result["corrupt_lines"] = self.corrupt_lines
        for name in ("lost_keys", "duplicate_keys", "unknown_keys"):
            keys = getattr(self, name)
            if keys:
                result[name] = keys[:max_keys]
                if len(keys) > max_keys:
                    result[name + "_total"] = len(keys)
        return result


@dataclass
class VerifyReport:
    input_dir: Path
    output_dir: Path
    tars: list[TarCheck]

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
        return sum(len(t.duplicate_keys) for t in self.tars)

    @property
    def unknown_keys(self) -> int:
        return sum(len(t.unknown_keys) for t in self.tars)

    @property
    def damaged_inputs(self) -> list[str]:
        return [t.tar for t in self.tars if t.input_damage]

    def to_dict(self, max_keys: int = 20) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "input_dir": str(self.input_dir),
            "output_dir": str(self.output_dir),
            "tars": len(self.tars),
            "tars_missing_output": self.missing_tars,
            "samples_expected": self.samples_expected,
            "lines": sum(t.lines for t in self.tars),
            "error_records": sum(t.error_records + t.tar_errors for t in self.tars),
            "lost_samples": self.lost_samples,
            "duplicate_keys": self.duplicate_keys,
            "unknown_keys": self.unknown_keys,
            "damaged_inputs": self.damaged_inputs,
            "problems": {t.tar: t.to_dict(max_keys) for t in self.tars if not t.ok},
        }


def check_tar(input_dir: Path | str, output_dir: Path | str, tar_path: Path | str) -> TarCheck:
    """Compare one input tar's sample keys with its output's lines and error records."""
    paths = tar_output_paths(output_dir, input_dir, tar_path)
    scan = scan_tar(tar_path)
    expected = Counter(scan.keys)
    check = TarCheck(str(paths.rel_tar), scan.count)
    if scan.damage is not None:
        check.input_damage = scan.damage.reason
    if not paths.jsonl.exists():
        check.output_missing = True
        return check
    found: Counter[str] = Counter()
    for line in _iter_lines(paths.jsonl):
        key = _line_key(line)
        if key is None:
            check.corrupt_lines += 1
            continue
        found[key] += 1
        check.lines += 1
    if paths.errors.exists():
        error_keys, check.tar_errors, corrupt = _read_errors(paths.errors)
        check.corrupt_lines += corrupt
        check.error_records = len(error_keys)
        found.update(error_keys)
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
    input_dir: Path | str,
    output_dir: Path | str,
    from_index: int = 0,
    to_index: int | None = None,
    recursive: bool = False,
) -> VerifyReport:
    """Check the selected input tars against ``output_dir`` (raises InputError like discover_tars)."""
    tars = discover_tars(input_dir, from_index, to_index, recursive)
    checks = [check_tar(input_dir, output_dir, tar) for tar in tars]
    return VerifyReport(Path(input_dir), Path(output_dir), checks)

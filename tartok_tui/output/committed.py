"""The committed tokens files of an output: one per done tar, what ``export`` and ``decode``
read (and what ``status`` counts).

A tokens file is ``OUTPUT/sub/X.jsonl`` or ``X.parquet`` outside the output's own top
directories (``errors/``, ``meta/``, ``logs/``, ``.partial/``). Locally the directory is
walked; an output URL is listed once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tartok_tui.output.files import ListedFiles, output_files
from tartok_tui.output.paths import (
    ERRORS_DIR,
    ERRORS_SUFFIX,
    OUTPUT_FORMATS,
    RESERVED_TOP_DIRS,
    format_of,
)
from tartok_tui.storage import Access, Location, as_location


def strip_suffix(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if name.endswith(suffix) else name


def local_tokens_stems(out: Path) -> dict[PurePosixPath, list[str]]:
    """Output stem (``sub/X``) -> formats of its tokens files, outside the reserved dirs."""
    found: dict[PurePosixPath, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(out):
        rel_dir = PurePosixPath(Path(dirpath).relative_to(out).as_posix())
        if rel_dir == PurePosixPath("."):
            dirnames[:] = [d for d in dirnames if d not in RESERVED_TOP_DIRS]
        dirnames.sort()
        for name in sorted(filenames):
            output_format = format_of(name)
            if output_format is not None:
                stem = rel_dir / strip_suffix(name, "." + output_format)
                found.setdefault(stem, []).append(output_format)
    return found


def listed_tokens_stems(
    keys: Iterable[PurePosixPath],
) -> tuple[dict[PurePosixPath, list[str]], list[PurePosixPath]]:
    """(output stem -> formats of its tokens files, stems of errors files) among the keys of
    an output URL's listing."""
    done: dict[PurePosixPath, list[str]] = {}
    error_stems: list[PurePosixPath] = []
    for key in sorted(keys, key=lambda p: p.parts):
        top = key.parts[0]
        if len(key.parts) > 1 and top == ERRORS_DIR and key.name.endswith(ERRORS_SUFFIX):
            rel = PurePosixPath(*key.parts[1:])
            error_stems.append(rel.with_name(strip_suffix(rel.name, ERRORS_SUFFIX)))
            continue
        if len(key.parts) > 1 and top in RESERVED_TOP_DIRS:
            continue
        output_format = format_of(key.name)
        if output_format is not None:
            stem = key.with_name(strip_suffix(key.name, "." + output_format))
            done.setdefault(stem, []).append(output_format)
    return done, error_stems


@dataclass(frozen=True)
class TokensFile:
    """One done tar's tokens file."""

    stem: PurePosixPath
    """The tar's output stem, ``sub/X``."""
    format: str
    size: int
    location: Location
    """Where to read it: a Path, or a URL."""

    @property
    def key(self) -> PurePosixPath:
        """Relative to the output: ``sub/X.jsonl``."""
        return self.stem.with_name(f"{self.stem.name}.{self.format}")


@dataclass
class CommittedTokens:
    files: list[TokensFile]
    """One per done tar, in the sorted order of their stems."""
    both_formats: list[PurePosixPath]
    """Stems with a tokens file in more than one format: the first of OUTPUT_FORMATS is the
    one listed (as ``status`` counts it)."""


def committed_tokens(output_dir: Location | str, access: Access | None = None) -> CommittedTokens:
    """The committed tokens files of ``output_dir`` (a directory, or a URL listed once)."""
    location = as_location(output_dir)
    files = output_files(location, access)
    if isinstance(files, ListedFiles):
        done, _ = listed_tokens_stems(files.sizes)
    else:
        done = local_tokens_stems(Path(location))
    found, both = [], []
    for stem in sorted(done, key=lambda p: p.parts):
        output_format = min(done[stem], key=OUTPUT_FORMATS.index)
        key = stem.with_name(f"{stem.name}.{output_format}")
        where = files.locate(key)
        size = files.sizes[key] if isinstance(files, ListedFiles) else Path(where).stat().st_size
        found.append(TokensFile(stem, output_format, size, where))
        if len(done[stem]) > 1:
            both.append(stem)
    return CommittedTokens(found, both)

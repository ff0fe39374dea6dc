"""Find the shards of an input directory (or URL prefix) and select an index range of them.

Shards are ``*.tar``, ``*.tar.gz`` and ``*.tgz`` files. Files that look like shards but are
not read (``.tar.zst``, ``.tar.bz2``, ``.zip``, ``X.tar.part``, ...) are returned as
``ignored``, so that a run can name them instead of skipping them silently.

Each shard's outputs are named after its output stem: ``sub/X`` for ``sub/X.tar``,
``sub/X.tar.gz`` and ``sub/X.tgz`` (``sub/X.jsonl``, ...), so two shards with one output stem
are refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tartok_tui.storage.reading import Access
from tartok_tui.storage.urls import is_url, join, redact_location


class InputError(Exception):
    """The input directory is missing or unusable (the CLI exits with code 2)."""


_SHARD = re.compile(r"\.(tar|tar\.gz|tgz)$", re.IGNORECASE)
_SHARD_LIKE = re.compile(
    r"(\.tar\.[^/]+|\.(tbz2?|txz|tzst|tlz|tlz4|taz|zip|7z|rar))$", re.IGNORECASE
)


def is_shard(name: str) -> bool:
    """True for the names the reader reads: ``.tar``, ``.tar.gz``, ``.tgz``."""
    return _SHARD.search(name) is not None


def looks_like_a_shard(name: str) -> bool:
    """True for names that suggest a dataset shard the reader does not read."""
    return not is_shard(name) and _SHARD_LIKE.search(name) is not None


TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
"""Stripped from a tar's name to name its output (longest first)."""


def output_stem(rel_tar: PurePosixPath) -> PurePosixPath:
    """``sub/X.tar`` -> ``sub/X``: the name every output file of the tar starts from. A
    gzipped tar's outputs are named as the plain tar's would be, so compressing the inputs
    does not rename outputs."""
    name = rel_tar.name
    for suffix in TAR_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return rel_tar.with_name(name[: -len(suffix)])
    return rel_tar.with_suffix("")


@dataclass(frozen=True)
class Discovery:
    """What discovery found."""

    tars: list[Any] = field(default_factory=list)
    """The selected shards, absolute: Paths for a local directory, URL strings for a URL."""
    ignored: list[str] = field(default_factory=list)
    """Shard-like files not read, relative to the input, sorted."""
    listed: dict[str, dict[str, Any]] = field(default_factory=dict)
    """For a URL input: each selected shard's URL -> its entry in the listing (size, ETag),
    so that what a shard is now is known without a request per shard. Empty for a
    local directory."""


def _walk_local(root: Path, recursive: bool) -> list[PurePosixPath]:
    found: list[PurePosixPath] = []
    if not recursive:
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.is_file():
                    found.append(PurePosixPath(entry.name))
        return found
    # Follow directory links (datasets are often assembled from links) but
    # visit each real directory once, so a link loop cannot recurse forever.
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        rel_dir = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        for name in filenames:
            if os.path.isfile(os.path.join(dirpath, name)):
                found.append(rel_dir / name)
    return found


def _list(
    input_dir: str | os.PathLike[str], recursive: bool, access: Access | None
) -> tuple[dict[PurePosixPath, dict[str, Any]], Any]:
    """(files relative to the input -> their listing entries (empty locally), the root to
    put before them)."""
    if is_url(input_dir):
        from tartok_tui.storage import StorageError, list_files, redact_url

        url = str(input_dir).rstrip("/")
        try:
            entries = list_files(url, recursive=recursive, access=access)
        except FileNotFoundError:
            raise InputError(f"nothing found at {redact_url(url)}") from None
        except (StorageError, OSError) as exc:
            raise InputError(f"cannot list {redact_url(url)}: {exc}") from exc
        return {PurePosixPath(rel): entry for rel, entry in entries.items()}, url
    root = Path(os.path.abspath(input_dir))
    if not root.exists():
        raise InputError(f"input directory does not exist: {input_dir}")
    if not root.is_dir():
        raise InputError(f"input path is not a directory: {input_dir}")
    try:
        return {rel: {} for rel in _walk_local(root, recursive)}, root
    except OSError as exc:
        raise InputError(f"cannot list input directory {input_dir}: {exc}") from exc


def _check(rels: list[PurePosixPath], reserved_top_dirs: Collection[str]) -> None:
    owners: dict[PurePosixPath, PurePosixPath] = {}
    for rel in rels:
        if len(rel.parts) > 1 and rel.parts[0] in reserved_top_dirs:
            raise InputError(
                f"{rel}: an input subdirectory named {rel.parts[0]!r} would collide with "
                "the output directory's own layout; rename it"
            )
        stem = output_stem(rel)
        other = owners.setdefault(stem, rel)
        if other != rel:
            raise InputError(
                f"{other} and {rel} would both write the outputs named {stem}; keep one of them"
            )


def discover_shards(
    input_dir: str | os.PathLike[str],
    from_index: int = 0,
    to_index: int | None = None,
    recursive: bool = False,
    *,
    reserved_top_dirs: Collection[str] = (),
    access: Access | None = None,
) -> Discovery:
    """The shards of ``input_dir`` (a directory or URL prefix) sorted by relative path,
    sliced ``[from_index:to_index]``, and the shard-like files that are not read.

    Sorting is by the relative path's parts, so a directory's tars stay together and the
    order, hence the meaning of an index range, is the same on every run. Shards under a
    top-level subdirectory named in ``reserved_top_dirs`` (the output's own directories,
    passed by the caller) and two shards with one output stem raise InputError.
    """
    files, root = _list(input_dir, recursive, access)
    rels = sorted((rel for rel in files if is_shard(rel.name)), key=lambda p: p.parts)
    ignored = sorted(rel.as_posix() for rel in files if looks_like_a_shard(rel.name))
    _check(rels, reserved_top_dirs)
    selected = rels[from_index:to_index]
    tars = [join(root, rel.as_posix()) for rel in selected]
    listed = {str(t): files[rel] for t, rel in zip(tars, selected, strict=True) if is_url(t)}
    return Discovery(tars, ignored, listed)


def no_tars_message(
    input_dir: str | os.PathLike[str], from_index: int, to_index: int | None, recursive: bool
) -> str:
    """What to say when the range selects no shard at all."""
    return (
        f"no tars in {redact_location(input_dir)} for range [{from_index}, "
        f"{'end' if to_index is None else to_index})"
        + ("" if recursive else " (subdirectories need --recursive)")
    )


def discover_tars(
    input_dir: str | os.PathLike[str],
    from_index: int = 0,
    to_index: int | None = None,
    recursive: bool = False,
    *,
    reserved_top_dirs: Collection[str] = (),
    access: Access | None = None,
) -> list[Any]:
    """The selected shards of :func:`discover_shards` (Paths, or URL strings for a URL)."""
    return discover_shards(
        input_dir,
        from_index,
        to_index,
        recursive,
        reserved_top_dirs=reserved_top_dirs,
        access=access,
    ).tars

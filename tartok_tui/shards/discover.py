"""Find the tars of an input directory and select an index range of them."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from tartok_tui.output.paths import RESERVED_TOP_DIRS


class InputError(Exception):
    """The input directory is missing or unusable (the CLI exits with code 2)."""


def _walk_tars(root: Path, recursive: bool) -> list[PurePosixPath]:
    found: list[PurePosixPath] = []
    if not recursive:
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.name.endswith(".tar") and entry.is_file():
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
            if name.endswith(".tar") and os.path.isfile(os.path.join(dirpath, name)):
                found.append(rel_dir / name)
    return found


def discover_tars(
    input_dir: Path | str,
    from_index: int = 0,
    to_index: int | None = None,
    recursive: bool = False,
) -> list[Path]:
    """The ``*.tar`` files of ``input_dir`` sorted by relative path, sliced ``[from_index:to_index]``.

    Paths come back absolute (workers may run elsewhere in the tree). Sorting
    is by the relative path's parts, so a directory's tars stay together and the
    order, hence the meaning of an index range, is the same on every run.
    """
    root = Path(os.path.abspath(input_dir))
    if not root.exists():
        raise InputError(f"input directory does not exist: {input_dir}")
    if not root.is_dir():
        raise InputError(f"input path is not a directory: {input_dir}")
    try:
        rels = sorted(_walk_tars(root, recursive), key=lambda p: p.parts)
    except OSError as exc:
        raise InputError(f"cannot list input directory {input_dir}: {exc}") from exc
    for rel in rels:
        if len(rel.parts) > 1 and rel.parts[0] in RESERVED_TOP_DIRS:
            raise InputError(
                f"{rel}: an input subdirectory named {rel.parts[0]!r} would collide with "
                "the output directory's own layout; rename it"
            )
    return [root / rel for rel in rels[from_index:to_index]]

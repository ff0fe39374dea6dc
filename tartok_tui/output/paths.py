"""Where a tar's output, errors, partial files and journal live.

For ``INPUT/sub/X.tar``:

    OUTPUT/sub/X.jsonl                           tokens; its existence means "tar done"
    OUTPUT/errors/sub/X.jsonl                    error records (only when there are any)
    OUTPUT/.partial/out/sub/X.jsonl.<suffix>     tokens being written
    OUTPUT/.partial/errors/sub/X.jsonl.<suffix>  error records being written
    OUTPUT/.partial/journal/sub/X.journal        isolation journal (stable name: read by the next attempt)
    OUTPUT/run-summary.json

The partial suffix holds host, pid and lease id, so two runs writing into one
output directory never share a partial file.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import psutil

ERRORS_DIR = "errors"
PARTIAL_DIR = ".partial"
LOGS_DIR = "logs"
SUMMARY_NAME = "run-summary.json"
RESERVED_TOP_DIRS = frozenset({ERRORS_DIR, PARTIAL_DIR, LOGS_DIR})
"""Top-level output names a tar's relative path may not start with (its output would collide)."""


def relative_tar_path(input_dir: Path | str, tar_path: Path | str) -> PurePosixPath:
    """``tar_path`` relative to ``input_dir``; both may be relative to the working directory.

    Symlinks are not resolved: a tar that is a link into a blob store keeps its name.
    """
    root = Path(os.path.abspath(input_dir))
    path = Path(os.path.abspath(tar_path))
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise ValueError(f"{tar_path} is not inside the input directory {input_dir}") from None
    return PurePosixPath(rel.as_posix())


def _host() -> str:
    return socket.gethostname().split(".")[0] or "host"


def partial_suffix(lease_id: int | str = 0) -> str:
    """A partial-file suffix unique to this process and lease."""
    return f"{_host()}-{os.getpid()}-{lease_id}.part"


def remove_stale_partials(output_dir: Path | str) -> list[Path]:
    """Delete partial files left by dead writers of this host; returns what was removed.

    A worker killed mid-tar leaves its partial file (its tar is redone from the start, so
    nothing is lost). Only files whose suffix names this host and a process that no longer
    exists are removed: a live process here, or any process on another machine sharing the
    output directory, may still be writing its own.
    """
    root = Path(output_dir) / PARTIAL_DIR
    host = _host()
    removed = []
    for sub in ("out", "errors"):
        base = root / sub
        if not base.is_dir():
            continue
        for path in base.rglob("*.part"):
            owner = path.name.rsplit(".", 2)[-2]  # "<host>-<pid>-<lease>"
            parts = owner.rsplit("-", 2)
            if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
                continue
            if not psutil.pid_exists(int(parts[1])):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


@dataclass(frozen=True)
class TarOutputPaths:
    """All paths belonging to one input tar."""

    output_dir: Path
    rel_tar: PurePosixPath
    """The tar relative to the input directory, e.g. ``sub/X.tar``."""

    @property
    def rel_jsonl(self) -> PurePosixPath:
        return self.rel_tar.with_suffix(".jsonl")

    @property
    def jsonl(self) -> Path:
        return self.output_dir / self.rel_jsonl

    @property
    def errors(self) -> Path:
        return self.output_dir / ERRORS_DIR / self.rel_jsonl

    @property
    def journal(self) -> Path:
        return self.output_dir / PARTIAL_DIR / "journal" / self.rel_tar.with_suffix(".journal")

    def partial_jsonl(self, suffix: str) -> Path:
        return self.output_dir / PARTIAL_DIR / "out" / f"{self.rel_jsonl}.{suffix}"

    def partial_errors(self, suffix: str) -> Path:
        return self.output_dir / PARTIAL_DIR / "errors" / f"{self.rel_jsonl}.{suffix}"


def tar_output_paths(
    output_dir: Path | str, input_dir: Path | str, tar_path: Path | str
) -> TarOutputPaths:
    """The output paths of ``tar_path``; ValueError if its output would collide with ours."""
    rel = relative_tar_path(input_dir, tar_path)
    if rel.parts and rel.parts[0] in RESERVED_TOP_DIRS and len(rel.parts) > 1:
        raise ValueError(
            f"{rel}: an input subdirectory named {rel.parts[0]!r} would collide with "
            f"the output's own {rel.parts[0]}/ directory"
        )
    return TarOutputPaths(Path(output_dir), rel)


def summary_path(output_dir: Path | str) -> Path:
    return Path(output_dir) / SUMMARY_NAME

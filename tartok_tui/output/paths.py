"""Where a tar's output, errors, partial files and journal live.

For ``INPUT/sub/X.tar`` (``X.tar.gz`` and ``X.tgz`` name their output ``X`` too):

    OUTPUT/sub/X.jsonl  or  OUTPUT/sub/X.parquet     tokens; its existence means "tar done"
    OUTPUT/errors/sub/X.jsonl                        error records, JSONL in both formats
                                                     (only when there are any)
    OUTPUT/meta/sub/X.json                           the tar's commit record (output.tarmeta)
    OUTPUT/manifest.json                             the run manifest (output.manifest)
    OUTPUT/.partial/out/sub/X.<fmt>.<suffix>         tokens being written
    OUTPUT/.partial/errors/sub/X.jsonl.<suffix>      error records being written
    OUTPUT/.partial/journal/sub/X.journal            isolation journal (the supervisor's; read by a later run)
    OUTPUT/run-summary.json
    OUTPUT/.claims/<selection>.json                  the claim of the run writing a range of
                                                     tars (output.claim); removed at its end

The partial suffix holds host, pid and lease id, so two runs writing into one
output directory never share a partial file.

A tar is done when its tokens file exists in any format: a run in one format
skips a tar already done in the other (``TarOutputPaths.done_format``) and the
writer refuses to add a second file next to it, so a tar never has both.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import psutil

from tartok_tui.shards.discover import output_stem
from tartok_tui.storage.urls import is_url, redact_location

ERRORS_DIR = "errors"
PARTIAL_DIR = ".partial"
LOGS_DIR = "logs"
META_DIR = "meta"
CLAIMS_DIR = ".claims"
SUMMARY_NAME = "run-summary.json"
RESERVED_TOP_DIRS = frozenset({ERRORS_DIR, PARTIAL_DIR, LOGS_DIR, META_DIR, CLAIMS_DIR})
"""Top-level output names a tar's relative path may not start with (its output would collide)."""

Exists = Callable[[PurePosixPath], bool]
"""Whether a key (a path relative to the output) exists there."""

OUTPUT_FORMATS = ("jsonl", "parquet")
"""The tokens-file formats, in the order a done tar's file is looked for."""
DEFAULT_FORMAT = "jsonl"
ERRORS_SUFFIX = ".jsonl"
"""Error records are JSONL whatever the tokens format."""


def check_output_format(output_format: str) -> str:
    """``output_format`` if it is one of OUTPUT_FORMATS, else ValueError."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(
            f"unknown output format {output_format!r} (expected one of {', '.join(OUTPUT_FORMATS)})"
        )
    return output_format


def format_of(name: str) -> str | None:
    """The format of a tokens file named ``name`` (by its suffix), or None."""
    for output_format in OUTPUT_FORMATS:
        if name.endswith("." + output_format):
            return output_format
    return None


def relative_tar_path(input_dir: Path | str, tar_path: Path | str) -> PurePosixPath:
    """``tar_path`` relative to ``input_dir``; both may be relative to the working directory,
    or both URLs (``s3://b/in/sub/X.tar`` in ``s3://b/in`` is ``sub/X.tar``).

    Symlinks are not resolved: a tar that is a link into a blob store keeps its name.
    """
    if is_url(input_dir) or is_url(tar_path):
        prefix = str(input_dir).partition("?")[0].rstrip("/") + "/"
        url = str(tar_path).partition("?")[0]
        if not (is_url(input_dir) and is_url(tar_path) and url.startswith(prefix)):
            raise ValueError(
                f"{redact_location(tar_path)} is not inside the input {redact_location(input_dir)}"
            )
        return PurePosixPath(url[len(prefix) :])
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


def partial_path(output_dir: Path | str, key: PurePosixPath, suffix: str) -> Path:
    """Where the file that will become ``OUTPUT/key`` is written first.

    ``errors/sub/X.jsonl`` -> ``.partial/errors/sub/X.jsonl.<suffix>``; a tokens file
    ``sub/X.<fmt>`` -> ``.partial/out/sub/X.<fmt>.<suffix>``.
    """
    parts = key.parts
    if parts and parts[0] == ERRORS_DIR:
        sub, rel = "errors", PurePosixPath(*parts[1:])
    else:
        sub, rel = "out", key
    return Path(output_dir) / PARTIAL_DIR / sub / f"{rel}.{suffix}"


PARTIAL_MAX_AGE_S = 24 * 3600.0
"""A partial file not modified for this long is left by a dead writer, whichever host it
names. A live writer touches its files at least every ``PARTIAL_TOUCH_S`` (writing or
not), so a day is a wide margin for clock skew between hosts and for a paused worker of
another run (which the output's one-writer claim excludes anyway); a partial file never
makes a tar done, so one kept too long costs only disk space until a later run."""
PARTIAL_TOUCH_S = 60.0
"""How often a writer refreshes the modification time of the partial files it holds."""


def remove_stale_partials(
    output_dir: Path | str, now: float | None = None, max_age_s: float = PARTIAL_MAX_AGE_S
) -> list[Path]:
    """Delete partial files left by dead writers; returns what was removed.

    A worker killed mid-tar leaves its partial files, of either format (its tar is
    redone from the start, so nothing is lost). Removed: the files whose suffix names this
    host and a process that no longer exists, and the files of any host (another machine
    sharing the output, a cluster node) not modified for ``max_age_s``. A live process
    here, or a recent file of another machine, may still be written.
    """
    root = Path(output_dir) / PARTIAL_DIR
    host = _host()
    now = time.time() if now is None else now
    removed = []
    for sub in ("out", "errors"):
        base = root / sub
        if not base.is_dir():
            continue
        for path in base.rglob("*.part"):
            owner = path.name.rsplit(".", 2)[-2]  # "<host>-<pid>-<lease>"
            parts = owner.rsplit("-", 2)
            dead_here = (
                len(parts) == 3
                and parts[0] == host
                and parts[1].isdigit()
                and not psutil.pid_exists(int(parts[1]))
            )
            try:
                stale = dead_here or now - path.stat().st_mtime > max_age_s
            except FileNotFoundError:  # committed or removed meanwhile
                continue
            if stale:
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


@dataclass(frozen=True)
class TarOutputPaths:
    """All paths belonging to one input tar, for a run writing ``output_format``."""

    output_dir: Path
    rel_tar: PurePosixPath
    """The tar relative to the input directory, e.g. ``sub/X.tar``."""
    output_format: str = DEFAULT_FORMAT

    def rel_tokens_in(self, output_format: str) -> PurePosixPath:
        """The tokens file in ``output_format``, relative to the output directory."""
        stem = output_stem(self.rel_tar)
        return stem.with_name(f"{stem.name}.{check_output_format(output_format)}")

    def tokens_in(self, output_format: str) -> Path:
        return self.output_dir / self.rel_tokens_in(output_format)

    @property
    def rel_tokens(self) -> PurePosixPath:
        """This run's tokens file, relative to the output directory."""
        return self.rel_tokens_in(self.output_format)

    @property
    def tokens(self) -> Path:
        """This run's tokens file; see ``done_format`` for "is this tar done"."""
        return self.output_dir / self.rel_tokens

    @property
    def jsonl(self) -> Path:
        """The JSONL tokens file (whatever this run's format)."""
        return self.tokens_in("jsonl")

    @property
    def parquet(self) -> Path:
        """The Parquet tokens file (whatever this run's format)."""
        return self.tokens_in("parquet")

    @property
    def rel_errors(self) -> PurePosixPath:
        stem = output_stem(self.rel_tar)
        return PurePosixPath(ERRORS_DIR) / stem.with_name(stem.name + ERRORS_SUFFIX)

    @property
    def errors(self) -> Path:
        return self.output_dir / self.rel_errors

    @property
    def journal(self) -> Path:
        stem = output_stem(self.rel_tar)
        return self.output_dir / PARTIAL_DIR / "journal" / stem.with_name(stem.name + ".journal")

    def partial_tokens(self, suffix: str) -> Path:
        return partial_path(self.output_dir, self.rel_tokens, suffix)

    def partial_errors(self, suffix: str) -> Path:
        return partial_path(self.output_dir, self.rel_errors, suffix)

    def done_formats(self, exists: Exists | None = None) -> list[str]:
        """The formats in which this tar's tokens file exists (more than one is a conflict).

        ``exists`` answers for a key relative to the output (an output URL's listing or
        store); by default the local output directory is asked."""
        exists = exists or self._exists_locally
        return [f for f in OUTPUT_FORMATS if exists(self.rel_tokens_in(f))]

    def done_format(self, exists: Exists | None = None) -> str | None:
        """The format this tar is done in (this run's first), or None if it is not done.

        A tar done in the other format counts as done: a run never writes a second
        tokens file for it (delete the old file to redo the tar in the new format).
        ``exists`` as for ``done_formats``.
        """
        exists = exists or self._exists_locally
        if exists(self.rel_tokens):
            return self.output_format
        done = self.done_formats(exists)
        return done[0] if done else None

    def _exists_locally(self, key: PurePosixPath) -> bool:
        return (self.output_dir / key).exists()

    def is_done(self) -> bool:
        return self.done_format() is not None


def tar_output_paths(
    output_dir: Path | str,
    input_dir: Path | str,
    tar_path: Path | str,
    output_format: str = DEFAULT_FORMAT,
) -> TarOutputPaths:
    """The output paths of ``tar_path``; ValueError if its output would collide with ours
    or ``output_format`` is unknown."""
    check_output_format(output_format)
    rel = relative_tar_path(input_dir, tar_path)
    if rel.parts and rel.parts[0] in RESERVED_TOP_DIRS and len(rel.parts) > 1:
        raise ValueError(
            f"{rel}: an input subdirectory named {rel.parts[0]!r} would collide with "
            f"the output's own {rel.parts[0]}/ directory"
        )
    return TarOutputPaths(Path(output_dir), rel, output_format)


def summary_path(output_dir: Path | str) -> Path:
    return Path(output_dir) / SUMMARY_NAME

"""Tars whose files wait for a batched commit (an ``hf://`` output, see ``output.hub_commit``).

On the Hub every upload is a commit, and a repository takes a limited number of commits
an hour. So for such an output the supervisor leases each tar with a *staged folder*,
``<spool>/.staged/<host>-<supervisor pid>-<lease id>/``, and the worker's writer, instead
of uploading, publishes the tar's files there (fsync + atomic rename, errors file first,
tokens file last, as in a local output) and lists in its ``.deletions`` file the objects
the commit must delete (an errors object an earlier attempt left). The supervisor commits
many tars' folders in one commit and only then counts those tars done.

A staged folder belongs to the supervisor that named it: its commit landed (the folder is
removed), failed (the tar goes back to the queue), or never happened because that
supervisor was killed: then the folder is swept at the next start and the tar is redone.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import psutil

from tartok_tui.output.paths import partial_suffix
from tartok_tui.output.store import StoreOutput
from tartok_tui.output.target import LocalTarget, PartialFile, fsync_dir, output_op

STAGED_DIR = ".staged"
DELETIONS = ".deletions"


def staged_folder(local_output_dir: Path | str, lease_id: int) -> Path:
    """The folder where lease ``lease_id`` of this (supervisor) process stages its tar."""
    owner = partial_suffix(lease_id).removesuffix(".part")  # <host>-<pid>-<lease>
    return Path(local_output_dir) / STAGED_DIR / owner


def sweep_staged(local_output_dir: Path | str, *, own: bool = False) -> list[Path]:
    """Remove staged folders whose supervisor is gone (``own``: this process's too, at the
    end of its run: whatever is left was never committed); returns what was removed.

    A folder named for a live process of this host (another run into the same output)
    or for another host is left alone."""
    root = Path(local_output_dir) / STAGED_DIR
    if not root.is_dir():
        return []
    host, me = partial_suffix().removesuffix(".part").rsplit("-", 2)[0], os.getpid()
    removed = []
    for folder in sorted(root.iterdir()):
        parts = folder.name.rsplit("-", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if (pid == me and own) or (pid != me and not psutil.pid_exists(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@dataclass(frozen=True)
class StagedFiles:
    """What one staged folder asks of the commit."""

    adds: dict[PurePosixPath, Path]
    """Key (relative to the output) -> the local file that becomes it."""
    deletes: tuple[PurePosixPath, ...]


def read_staged(folder: Path) -> StagedFiles:
    adds = {
        PurePosixPath(path.relative_to(folder).as_posix()): path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != DELETIONS
    }
    listed = folder / DELETIONS
    deletes = listed.read_text(encoding="utf-8").splitlines() if listed.exists() else []
    return StagedFiles(adds, tuple(PurePosixPath(key) for key in deletes if key))


class StagingTarget:
    """An ``OutputTarget`` that stages a tar's files for a batched commit (see the module
    doc): partial files in the spool's ``.partial/`` as for any output URL, published by
    rename into ``folder``; ``exists`` asks the store."""

    def __init__(
        self, store: StoreOutput, root: Path, folder: Path, local: LocalTarget | None = None
    ) -> None:
        self.store = store
        self.local = local if local is not None else LocalTarget(root)
        self.folder = Path(folder)
        self.staged = LocalTarget(self.folder)

    def open_partial(self, key: PurePosixPath, suffix: str) -> PartialFile:
        return self.local.open_partial(key, suffix)

    def publish(self, part: PartialFile) -> None:
        """Stage ``part`` as ``key`` (durable, atomic: the spool and the folder share a disk)."""
        self.staged.publish(part)

    def remove(self, key: PurePosixPath) -> None:
        """The commit deletes ``key`` if the output has it (and nothing staged stands for it)."""
        self.staged.remove(key)
        if not self.store.exists(key):
            return
        listed = self.folder / DELETIONS
        with output_op(listed, "staging a deletion"):
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(listed, "a", encoding="utf-8") as handle:
                handle.write(f"{key}\n")
                handle.flush()
                os.fsync(handle.fileno())
            fsync_dir(self.folder)

    def exists(self, key: PurePosixPath) -> bool:
        return self.store.exists(key)

    def discard(self, part: PartialFile) -> None:
        self.local.discard(part)

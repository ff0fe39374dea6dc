"""Finding a run's output files: in a local directory, or on object storage from one listing.

Resume, ``status`` and ``verify`` ask "which of these files exist" for many tars. Locally
each answer is a ``stat``; on object storage the output prefix is listed once and every
answer comes from that listing (never a request per tar). A single check made later (a
worker died: did it commit first?) asks the store directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from tartok_tui.output.paths import TarOutputPaths, tar_output_paths
from tartok_tui.storage import Access, Location, is_url


class OutputFiles(Protocol):
    """The files of one output, by key relative to it (``sub/X.jsonl``)."""

    location: Location

    def exists(self, key: PurePosixPath) -> bool: ...
    def locate(self, key: PurePosixPath) -> Location:
        """Where to read ``key``: a Path, or a URL."""
        ...

    def read_bytes(self, key: PurePosixPath) -> bytes:
        """The whole of a small file (a commit record, the run summary)."""
        ...


class LocalFiles:
    """A local output directory, asked file by file."""

    def __init__(self, root: Path | str) -> None:
        self.location: Location = Path(root)
        self.root = Path(root)

    def exists(self, key: PurePosixPath) -> bool:
        return (self.root / key).exists()

    def locate(self, key: PurePosixPath) -> Location:
        return self.root / key

    def read_bytes(self, key: PurePosixPath) -> bytes:
        return (self.root / key).read_bytes()


class ListedFiles:
    """An output prefix on object storage, as one listing found it."""

    def __init__(self, url: str, access: Access | None = None) -> None:
        from tartok_tui.output.store import StoreOutput

        self.store = StoreOutput(url, access)
        self.location: Location = self.store.url
        self.sizes = self.store.list_keys()

    def exists(self, key: PurePosixPath) -> bool:
        return key in self.sizes

    def locate(self, key: PurePosixPath) -> Location:
        return self.store.url_of(key)

    def read_bytes(self, key: PurePosixPath) -> bytes:
        return self.store.read_bytes(key)


def output_files(output_dir: Location, access: Access | None = None) -> OutputFiles:
    """The files of ``output_dir``: a local directory, or one listing of a URL prefix."""
    if is_url(output_dir):
        return ListedFiles(str(output_dir), access)
    return LocalFiles(output_dir)


def _keys(input_dir: Location, tar: Location, output_format: str) -> TarOutputPaths:
    # Only the keys are used: the output root does not matter here.
    return tar_output_paths(Path("."), input_dir, tar, output_format)


def done_formats(
    output_dir: Location,
    input_dir: Location,
    tars: Iterable[Any],
    output_format: str,
    access: Access | None = None,
) -> dict[Any, str | None]:
    """tar -> the format it is done in, or None; an output URL is listed once for all."""
    if not is_url(output_dir):
        return {
            tar: tar_output_paths(output_dir, input_dir, tar, output_format).done_format()
            for tar in tars
        }
    files = ListedFiles(str(output_dir), access)
    return {tar: _keys(input_dir, tar, output_format).done_format(files.exists) for tar in tars}


def done_format_now(
    output_dir: Location,
    input_dir: Location,
    tar: Location,
    output_format: str,
    access: Access | None = None,
) -> str | None:
    """The format one tar is done in now, asked of the output itself (no listing)."""
    if not is_url(output_dir):
        return tar_output_paths(output_dir, input_dir, tar, output_format).done_format()
    from tartok_tui.output.store import StoreOutput

    store = StoreOutput(str(output_dir), access)
    return _keys(input_dir, tar, output_format).done_format(store.exists)

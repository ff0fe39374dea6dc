"""A read error of the input (a failing disk, a lost mount) is InputUnavailable, never damage:
damage is recorded and marks the tar done, an unreadable input must be tried again."""

from __future__ import annotations

import errno
import gzip
import io
import random
from pathlib import Path

import pytest
from tar_makers import python_tar

from tartok_tui.shards.reader import InputUnavailable, iter_samples, scan_tar
from tartok_tui.storage import reading


class FailingFile(io.BufferedReader):
    """A local file whose reads fail with EIO once ``good_bytes`` have been read."""

    def __init__(self, path: str, good_bytes: int) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self.good_bytes = good_bytes

    def _check(self) -> None:
        if self.tell() >= self.good_bytes:
            raise OSError(errno.EIO, "Input/output error")

    def read(self, size: int | None = -1) -> bytes:
        self._check()
        return super().read(size)

    def readinto(self, buffer) -> int:  # type: ignore[override]
        self._check()
        return super().readinto(buffer)


@pytest.fixture
def failing_after(monkeypatch: pytest.MonkeyPatch):
    def arm(good_bytes: int) -> None:
        monkeypatch.setattr(
            reading, "open", lambda path, mode: FailingFile(path, good_bytes), raising=False
        )

    return arm


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("indexed", [False, True], ids=["streamed", "indexed"])
def test_an_io_error_mid_tar_raises_input_unavailable(
    tmp_path: Path, failing_after, compressed: bool, indexed: bool
) -> None:
    members = []
    for i in range(6):
        # Incompressible audio: the gzipped tar is as long as the plain one.
        members += [(f"k{i}.json", b"{}"), (f"k{i}.wav", random.Random(i).randbytes(50_000))]
    tar = python_tar(tmp_path / "t.tar", members)
    if compressed:
        tar.write_bytes(gzip.compress(tar.read_bytes()))
    failing_after(tar.stat().st_size // 2)
    with pytest.raises(InputUnavailable, match="Input/output error"):
        list(iter_samples(tar, indexed=indexed))
    with pytest.raises(InputUnavailable):
        scan_tar(tar)


def test_a_missing_file_raises_its_own_error(tmp_path: Path) -> None:
    for indexed in (False, True):
        with pytest.raises(FileNotFoundError):
            list(iter_samples(tmp_path / "gone.tar", indexed=indexed))
    with pytest.raises(FileNotFoundError):
        scan_tar(tmp_path / "gone.tar")

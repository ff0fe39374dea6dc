"""A full, over-quota or read-only output stops the tar with OutputUnavailable, never a bad
sample: the writer names the path and the errno, removes its partial files, and the same tar
commits once space is back. With a fake disk that fills up, and with a real small tmpfs where
this machine lets the tests mount one."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from output_support import files_under

from tartok_tui.output.journal import JournalEntry, append_journal, read_journal
from tartok_tui.output.read import read_rows
from tartok_tui.output.target import WRITE_BUFFER, LocalTarget, OutputUnavailable
from tartok_tui.output.writer import TarWriter, make_record

FORMATS = ("jsonl", "parquet")


def record(i: int, tokens: int = 1500) -> dict:
    # Random tokens, as incompressible as real ones can be: Parquet cannot shrink them away.
    semantic = np.random.default_rng(i).integers(0, 8192, tokens)
    return make_record(f"k{i:05d}", {"text": f"t{i}", "language": "en"}, [i % 4096] * 32, semantic)


class FillingDisk(LocalTarget):
    """A local target on a disk with ``capacity`` bytes free for file data: the write that
    crosses it is cut short, the next one fails with ``err``. ``fail`` makes one other
    seam (``_fsync``, ``_replace``, ``_open``, ``_unlink``) fail with ``err`` instead."""

    def __init__(
        self,
        output_dir: Path,
        capacity: int | None = None,
        err: int = errno.ENOSPC,
        fail: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        super().__init__(output_dir)
        self.free = capacity
        self.err = err
        self.fail = set(fail)

    def _check(self, seam: str, path: object) -> None:
        if seam in self.fail:
            raise OSError(self.err, os.strerror(self.err), str(path))

    def _write(self, fd: int, data: memoryview) -> int:
        if self.free is None:
            return super()._write(fd, data)
        if self.free <= 0:
            raise OSError(self.err, os.strerror(self.err))
        written = super()._write(fd, data[: self.free])
        self.free -= written
        return written

    def _fsync(self, fd: int) -> None:
        self._check("_fsync", fd)
        super()._fsync(fd)

    def _replace(self, src: Path, dst: Path) -> None:
        self._check("_replace", dst)
        super()._replace(src, dst)

    def _open(self, path: Path) -> int:
        self._check("_open", path)
        return super()._open(path)

    def _unlink(self, path: Path) -> None:
        self._check("_unlink", path)
        super()._unlink(path)


def fill_tar(writer: TarWriter, n: int) -> None:
    for i in range(n):
        if i % 10 == 3:
            writer.add_error(i, f"k{i:05d}", "decode", "bad bytes")
        else:
            writer.add(i, record(i))


# ---------------------------------------------------------------------- a fake disk


def test_a_disk_that_fills_while_lines_stream_out_stops_the_tar_cleanly(dirs) -> None:
    inp, out, tar = dirs
    disk = FillingDisk(out, capacity=WRITE_BUFFER + 1000)
    with TarWriter(out, inp, tar, lease_id=4, target=disk) as writer:
        with pytest.raises(OutputUnavailable) as caught:
            fill_tar(writer, 400)  # ~9 KB lines: the second buffer flush meets the full disk
        assert not writer.committed and writer.lines > 100
    exc = caught.value
    assert isinstance(exc, OSError) and exc.errno == errno.ENOSPC and exc.errno_name == "ENOSPC"
    partial = out / ".partial" / "out" / "sub" / f"X.jsonl.{tar_suffix(4)}"
    assert exc.filename == str(partial) and exc.action == "writing"
    assert str(exc) == (
        f"output unavailable: no space left on the device (ENOSPC) while writing {partial}; "
        "partial files removed"
    )
    assert files_under(out) == []


def tar_suffix(lease: int) -> str:
    from tartok_tui.output.paths import partial_suffix

    return partial_suffix(lease)


@pytest.mark.parametrize(
    ("output_format", "samples"),
    [
        ("jsonl", 30),  # the last lines meet the full disk when commit flushes them
        ("parquet", 30),  # the file is written at commit, in one flush
        ("parquet", 600),  # ~1.5 MB: the disk fills while pyarrow is writing
    ],
)
def test_a_disk_that_fills_at_commit_leaves_no_file_and_no_done_mark(
    dirs, output_format: str, samples: int
) -> None:
    inp, out, tar = dirs
    disk = FillingDisk(out, capacity=20_000)
    writer = TarWriter(out, inp, tar, target=disk, output_format=output_format)
    fill_tar(writer, samples)
    with pytest.raises(OutputUnavailable, match="ENOSPC") as caught:
        writer.commit()
    assert caught.value.cleanup == "partial files removed"
    assert files_under(out) == []
    with pytest.raises(RuntimeError, match="aborted"):
        writer.add(samples, record(samples))
    writer.abort()  # a worker's own clean-up after the failure is harmless


@pytest.mark.parametrize(
    ("seam", "err", "name", "action"),
    [
        ("_fsync", errno.EDQUOT, "EDQUOT", "syncing"),
        ("_replace", errno.EROFS, "EROFS", "renaming into place"),
        ("_open", errno.EROFS, "EROFS", "creating"),
    ],
)
def test_quota_and_read_only_are_recognised_at_every_step(
    dirs, seam: str, err: int, name: str, action: str
) -> None:
    inp, out, tar = dirs
    disk = FillingDisk(out, err=err, fail={seam} if seam != "_open" else set())
    writer = TarWriter(out, inp, tar, target=disk)
    writer.add(0, record(0))
    writer.add_error(1, "k00001", "decode", "x")  # opens the errors file
    disk.fail = {seam}
    with pytest.raises(OutputUnavailable) as caught:
        if seam == "_open":
            TarWriter(out, inp, tar, target=disk, lease_id=2)
        else:
            writer.commit()
    assert caught.value.errno_name == name and caught.value.action == action
    assert name in str(caught.value)
    writer.abort()
    assert [f for f in files_under(out) if not f.startswith("errors/")] == []


def test_when_the_partial_files_cannot_be_removed_either_it_says_so(dirs) -> None:
    inp, out, tar = dirs
    disk = FillingDisk(out, err=errno.EROFS)
    writer = TarWriter(out, inp, tar, target=disk)
    writer.add(0, record(0))
    disk.fail = {"_fsync", "_unlink"}  # a file system that just went read-only
    with pytest.raises(OutputUnavailable) as caught:
        writer.commit()
    assert caught.value.cleanup.startswith("the partial files could not be removed either: ")
    assert "Read-only file system" in str(caught.value)
    assert not (out / "sub" / "X.jsonl").exists()


def test_other_os_errors_are_not_taken_for_a_full_disk(dirs) -> None:
    inp, out, tar = dirs
    disk = FillingDisk(out, err=errno.EIO)
    writer = TarWriter(out, inp, tar, target=disk)
    writer.add(0, record(0))
    disk.fail = {"_fsync"}
    with pytest.raises(OSError) as caught:
        writer.commit()
    assert type(caught.value) is OSError and caught.value.errno == errno.EIO
    assert not writer.committed
    writer.abort()
    assert files_under(out) == []


def test_the_error_survives_a_trip_between_processes() -> None:
    exc = OutputUnavailable(errno.EDQUOT, "/out/x.jsonl", "syncing", "partial files removed")
    back = pickle.loads(pickle.dumps(exc))
    assert (back.errno, back.filename, back.action, back.cleanup) == (
        errno.EDQUOT,
        "/out/x.jsonl",
        "syncing",
        "partial files removed",
    )
    assert str(back) == str(exc)


@pytest.mark.parametrize("output_format", FORMATS)
def test_after_space_is_freed_the_same_tar_commits_exactly_once(dirs, output_format) -> None:
    inp, out, tar = dirs
    suffix = ".parquet" if output_format == "parquet" else ".jsonl"
    with TarWriter(
        out, inp, tar, target=FillingDisk(out, capacity=5000), output_format=output_format
    ) as w:
        fill_tar(w, 30)
        with pytest.raises(OutputUnavailable):
            w.commit()
    with TarWriter(out, inp, tar, output_format=output_format) as w:
        fill_tar(w, 30)
        w.commit()
    assert files_under(out) == ["errors/sub/X.jsonl", f"sub/X{suffix}"]
    keys = [r["key"] for r in read_rows(out / "sub" / f"X{suffix}")]
    assert keys == [f"k{i:05d}" for i in range(30) if i % 10 != 3]


def test_a_full_disk_while_journalling_cuts_the_journal_back_to_its_decided_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal" / "X.journal"
    append_journal(path, [JournalEntry(0, "k00000", record=record(0))])
    before = path.read_bytes()
    real_fsync = os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:  # the new lines' sync; the cut-back's sync succeeds
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OutputUnavailable, match="cut back") as caught:
        append_journal(path, [JournalEntry(1, "k00001", record=record(1))])
    monkeypatch.undo()
    assert caught.value.filename == str(path)
    assert path.read_bytes() == before
    assert set(read_journal(path)) == {0}
    append_journal(path, [JournalEntry.crash(1, "k00001")])  # space is back
    assert read_journal(path)[1].stage == "worker_crash"


# ---------------------------------------------------------------------- a real tmpfs


def _mount(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test; skipped where this process may not mount."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = _mount(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)])
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        _mount(["umount", "-l", str(mnt)])


@pytest.mark.parametrize("output_format", FORMATS)
def test_a_real_full_tmpfs_stops_the_tar_and_the_rerun_completes(
    small_fs: Path, tmp_path: Path, output_format: str
) -> None:
    inp, out = tmp_path / "in", small_fs / "out"
    (inp / "sub").mkdir(parents=True)
    tar = inp / "sub" / "X.tar"
    tar.write_bytes(b"")
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 120 * 1024))  # ~120 KB left
    with (
        pytest.raises(OutputUnavailable) as caught,
        TarWriter(out, inp, tar, output_format=output_format) as writer,
    ):
        fill_tar(writer, 100)  # ~800 KB of JSONL or ~220 KB of Parquet: does not fit
        writer.commit()
    exc = caught.value
    assert exc.errno == errno.ENOSPC and str(small_fs) in exc.filename
    assert exc.cleanup == "partial files removed"
    assert files_under(out) == []

    filler.unlink()  # space is back
    with TarWriter(out, inp, tar, output_format=output_format) as writer:
        fill_tar(writer, 100)
        writer.commit()
    suffix = "." + output_format
    assert files_under(out) == ["errors/sub/X.jsonl", f"sub/X{suffix}"]
    assert len(list(read_rows(out / "sub" / f"X{suffix}"))) == 90


def test_a_real_read_only_mount_is_recognised(small_fs: Path, tmp_path: Path) -> None:
    inp, out = tmp_path / "in", small_fs / "out"
    (inp / "sub").mkdir(parents=True)
    (out / "sub").mkdir(parents=True)
    tar = inp / "sub" / "X.tar"
    tar.write_bytes(b"")
    done = _mount(["mount", "-o", "remount,ro", str(small_fs)])
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")
    with pytest.raises(OutputUnavailable) as caught:
        TarWriter(out, inp, tar)
    assert caught.value.errno == errno.EROFS and caught.value.action == "creating"
    assert "read-only file system (EROFS)" in str(caught.value)

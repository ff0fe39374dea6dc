"""Tars as people make them: packed from a directory by GNU tar (members in directory order),
by Python's tarfile in any order, gzipped. Streaming stops with Ungrouped; the indexed read
yields every sample exactly once in order of first appearance; scan_tar agrees with both."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from tar_makers import (
    Written,
    gnu_tar,
    member_order,
    needs_gnu_tar,
    python_tar,
    sample_dir,
    shuffled_members,
    truncate,
    written_samples,
)

from tartok_tui.shards.reader import Sample, TarDamage, Ungrouped, iter_samples, scan_tar


def read_like_the_worker(path: Path) -> tuple[list[Sample], object | None, bool]:
    """Stream; on Ungrouped start over indexed. (samples, last non-sample item, indexed?)"""
    items = list(iter_samples(path, ("mp3", "wav")))
    indexed = bool(items) and isinstance(items[-1], Ungrouped)
    if indexed:
        items = list(iter_samples(path, ("mp3", "wav"), indexed=True))
        assert not any(isinstance(i, Ungrouped) for i in items)
    samples = [i for i in items if isinstance(i, Sample)]
    tail = items[-1] if items and not isinstance(items[-1], Sample) else None
    return samples, tail, indexed


def assert_complete(samples: list[Sample], written: list[Written], order: list[str]) -> None:
    by_key = {w.key: w for w in written}
    assert [s.key for s in samples] == order
    assert sorted(order) == sorted(by_key)  # every sample, exactly once
    for i, s in enumerate(samples):
        assert s.index == i and s.problem is None, s.problem
        assert s.audio == by_key[s.key].audio and s.meta == by_key[s.key].meta
        assert s.audio_ext == "mp3"


@needs_gnu_tar
@pytest.mark.parametrize("fmt", ["gnu", "pax"])
@pytest.mark.parametrize("long_paths", [False, True], ids=["short", "long-paths"])
def test_a_directory_packed_by_gnu_tar_is_read_indexed_exactly_once(
    tmp_path: Path, fmt: str, long_paths: bool
) -> None:
    written = sample_dir(tmp_path / "src", 12, long_paths=long_paths)
    tar = gnu_tar(tmp_path / "src", tmp_path / "x.tar", fmt)
    names = member_order(tar)
    assert names[0].startswith("./") and any(len(n) > 100 for n in names) == long_paths

    streamed = list(iter_samples(tar, ("mp3",)))
    assert isinstance(streamed[-1], Ungrouped)
    assert streamed[-1].after_index == len(streamed) - 1
    samples, tail, indexed = read_like_the_worker(tar)
    assert indexed and tail is None
    order = list(dict.fromkeys(_key(n) for n in names))
    assert_complete(samples, written, order)
    scan = scan_tar(tar)
    assert (scan.keys, scan.grouped, scan.damage) == (order, False, None)


def _key(member: str) -> str:
    name = member.removeprefix("./")
    head, _, base = name.rpartition("/")
    return (head + "/" if head else "") + base.split(".")[0]


@needs_gnu_tar
@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_a_sorted_gnu_tar_streams_and_indexed_gives_the_same(tmp_path: Path, fmt: str) -> None:
    written = sample_dir(tmp_path / "src", 8, long_paths=True)
    tar = gnu_tar(tmp_path / "src", tmp_path / "x.tar", fmt, sort=True)
    streamed = list(iter_samples(tar, ("mp3",)))
    assert all(isinstance(i, Sample) for i in streamed)
    assert_complete(streamed, written, sorted(w.key for w in written))  # type: ignore[arg-type]
    assert list(iter_samples(tar, ("mp3",), indexed=True)) == streamed
    scan = scan_tar(tar)
    assert scan.grouped and scan.keys == [s.key for s in streamed]  # type: ignore[union-attr]


@needs_gnu_tar
def test_a_gzipped_gnu_tar_is_streamed_then_indexed_from_a_spool(tmp_path: Path) -> None:
    written = sample_dir(tmp_path / "src", 10)
    tar = gnu_tar(tmp_path / "src", tmp_path / "x.tar.gz", "gnu", gzip=True)
    assert tar.read_bytes()[:2] == b"\x1f\x8b"
    samples, tail, indexed = read_like_the_worker(tar)
    assert indexed and tail is None
    order = list(dict.fromkeys(_key(n) for n in member_order(tar)))
    assert_complete(samples, written, order)
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    again = list(iter_samples(tar, ("mp3",), indexed=True, spool_dir=str(spool_dir)))
    assert again == samples  # deterministic
    assert list(spool_dir.iterdir()) == []  # the spool is gone once read
    assert scan_tar(tar).keys == order


def test_python_tarfile_with_members_apart_is_read_indexed(tmp_path: Path) -> None:
    written = written_samples(6)
    tar = python_tar(tmp_path / "t.tgz", [])
    plain = python_tar(tmp_path / "t.tar", shuffled_members(written))
    tar.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, tar):
        samples, tail, indexed = read_like_the_worker(path)
        assert indexed and tail is None
        assert [s.key for s in samples] == [w.key for w in written]
        assert [s.audio for s in samples] == [w.audio for w in written]
        assert all(s.problem is None and s.audio_ext == "wav" for s in samples)


def test_members_apart_without_a_repeat_before_the_damage_stream_as_damaged(
    tmp_path: Path,
) -> None:
    # Cut before any key came back: as far as it can be read, the tar is grouped.
    written = written_samples(4)
    tar = python_tar(tmp_path / "t.tar", shuffled_members(written))
    cut = truncate(tar, tmp_path / "cut.tar", 512 * 7)  # inside the JSON members
    samples, tail, indexed = read_like_the_worker(cut)
    assert not indexed and isinstance(tail, TarDamage)
    assert len(samples) == 3  # the JSON members before the cut
    scan = scan_tar(cut)
    assert scan.grouped and scan.keys == [s.key for s in samples]
    assert all("no audio member" in (s.problem or "") for s in samples)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_truncated_ungrouped_tars_agree_with_the_scan_at_every_cut(
    tmp_path: Path, compressed: bool
) -> None:
    written = written_samples(5)
    tar = python_tar(tmp_path / "t.tar", shuffled_members(written))
    data = tar.read_bytes()
    if compressed:
        data = gzip.compress(data, mtime=0)
    by_key = {w.key: w for w in written}
    for size in range(0, len(data) + 1, 97 if not compressed else 13):
        cut = tmp_path / "cut.tar"
        cut.write_bytes(data[:size])
        samples, tail, _ = read_like_the_worker(cut)
        scan = scan_tar(cut)
        assert [s.key for s in samples] == scan.keys, size
        assert (tail is None) == (scan.damage is None), size
        if isinstance(tail, TarDamage):
            assert tail.after_index == len(samples) == scan.damage.after_index  # type: ignore[union-attr]
        for s in samples:
            # Whatever is yielded is whole: a member is never passed on cut short.
            if s.audio is not None:
                assert s.audio == by_key[s.key].audio, size


def test_an_emilia_like_tar_written_ungrouped_is_read_indexed(tmp_path: Path) -> None:
    from tartok_tui.demo.data import write_emilia_tar

    kwargs = {"audio_format": "wav", "min_s": 0.3, "max_s": 0.5, "broken": {2: "no_audio"}}
    grouped = write_emilia_tar(tmp_path / "g.tar", 5, **kwargs)
    write_emilia_tar(tmp_path / "u.tar", 5, layout="ungrouped", **kwargs)
    streamed = list(iter_samples(tmp_path / "g.tar"))
    assert isinstance(list(iter_samples(tmp_path / "u.tar"))[-1], Ungrouped)
    assert list(iter_samples(tmp_path / "u.tar", indexed=True)) == streamed
    assert [s.key for s in streamed] == [g.key for g in grouped]  # type: ignore[union-attr]
    assert not scan_tar(tmp_path / "u.tar").grouped


@needs_gnu_tar
@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_a_sparse_member_reads_the_same_in_both_modes(tmp_path: Path, fmt: str) -> None:
    import subprocess

    src = tmp_path / "src"
    src.mkdir()
    (src / "k.json").write_text("{}")
    with open(src / "k.wav", "wb") as f:  # a hole of 1 MiB, then data
        f.seek(1 << 20)
        f.write(b"end of the sparse file")
    tar = tmp_path / "s.tar"
    subprocess.run(
        ["tar", f"--format={fmt}", "--sparse", "-cf", str(tar), "-C", str(src), "k.wav", "k.json"],
        check=True,
    )
    expected = (src / "k.wav").read_bytes()
    for indexed in (False, True):
        [sample] = list(iter_samples(tar, indexed=indexed))
        assert isinstance(sample, Sample) and sample.problem is None
        assert sample.audio == expected

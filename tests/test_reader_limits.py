"""No member of a tar can make the reader allocate what it claims: oversized JSON or audio is
an error record, read no further; a huge size claimed in a truncated tar is damage."""

from __future__ import annotations

import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from tar_makers import huge_member_header, python_tar

from tartok_tui.shards.reader import Sample, TarDamage, iter_samples, scan_tar

MiB = 1 << 20
MODES = pytest.mark.parametrize("indexed", [False, True], ids=["streamed", "indexed"])


def end_of_members(path: Path) -> int:
    """Where the end-of-archive blocks start."""
    with tarfile.open(path) as t:
        return max(m.offset_data + -(-m.size // 512) * 512 for m in t.getmembers())


def peak_bytes(run: Callable[[], object]) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@MODES
def test_an_oversized_audio_member_is_a_problem_and_never_read(
    tmp_path: Path, indexed: bool
) -> None:
    big = b"\x00" * (6 * MiB)
    tar = python_tar(
        tmp_path / "t.tar",
        [("a.json", b"{}"), ("a.wav", big), ("b.json", b"{}"), ("b.wav", b"small")],
    )
    items, peak = peak_bytes(
        lambda: list(iter_samples(tar, indexed=indexed, max_audio_bytes=2 * MiB))
    )
    a, b = items  # type: ignore[misc]
    assert a.audio is None and a.audio_ext == "wav"
    assert a.problem == "audio member a.wav is 6.0 MiB, over the 2 MiB limit"
    assert b.problem is None and b.audio == b"small"
    assert peak < 2 * MiB, peak  # the 6 MiB were skipped, not read


@MODES
def test_an_oversized_json_member_is_a_problem_and_never_read(
    tmp_path: Path, indexed: bool
) -> None:
    big = b'{"text": "' + b"x" * (3 * MiB) + b'"}'
    tar = python_tar(tmp_path / "t.tar", [("a.json", big), ("a.wav", b"A")])
    items, peak = peak_bytes(lambda: list(iter_samples(tar, indexed=indexed, max_json_bytes=MiB)))
    [a] = items  # type: ignore[misc]
    assert a.meta is None and a.audio == b"A"
    assert a.problem == "JSON member a.json is 3.0 MiB, over the 1 MiB limit"
    assert peak < MiB, peak


@MODES
def test_a_member_claiming_a_gigabyte_in_a_truncated_tar_is_damage(
    tmp_path: Path, indexed: bool
) -> None:
    good = python_tar(tmp_path / "good.tar", [("a.json", b"{}"), ("a.wav", b"A")]).read_bytes()
    end_of_a = end_of_members(tmp_path / "good.tar")
    # Keep a's members, then b.wav claims 1.5 GiB and 2 KiB follow.
    body = good[:end_of_a] + huge_member_header("b.wav", 3 * (1 << 29)) + b"\x01" * 2048
    tar = tmp_path / "claims.tar"
    tar.write_bytes(body)
    items, peak = peak_bytes(lambda: list(iter_samples(tar, indexed=indexed)))
    samples = [i for i in items if isinstance(i, Sample)]  # type: ignore[attr-defined]
    damage = items[-1]  # type: ignore[index]
    assert [s.key for s in samples] == ["a"] and samples[0].problem is None
    assert isinstance(damage, TarDamage) and damage.after_index == 1
    assert "'b' is incomplete" in damage.reason
    assert peak < 4 * MiB, peak
    assert scan_tar(tar).keys == ["a"]


@MODES
def test_a_huge_extended_header_is_damage_not_an_allocation(tmp_path: Path, indexed: bool) -> None:
    good = python_tar(tmp_path / "good.tar", [("a.json", b"{}"), ("a.wav", b"A")]).read_bytes()
    end_of_a = end_of_members(tmp_path / "good.tar")
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = 1 << 30  # a path a gigabyte long
    header = pax.tobuf(format=tarfile.USTAR_FORMAT)
    tar = tmp_path / "pax.tar"
    tar.write_bytes(good[:end_of_a] + header + b"1" * 4096)
    items, peak = peak_bytes(lambda: list(iter_samples(tar, indexed=indexed)))
    assert [i.key for i in items if isinstance(i, Sample)] == []  # type: ignore[attr-defined]
    damage = items[-1]  # type: ignore[index]
    assert isinstance(damage, TarDamage) and "extended header" in damage.reason
    assert "'a' is incomplete" in damage.reason
    assert peak < 4 * MiB, peak


def test_limits_apply_to_gzipped_tars(tmp_path: Path) -> None:
    import gzip

    plain = python_tar(tmp_path / "t.tar", [("a.json", b"{}"), ("a.flac", b"\x00" * (3 * MiB))])
    tgz = tmp_path / "t.tgz"
    tgz.write_bytes(gzip.compress(plain.read_bytes()))
    for indexed in (False, True):
        [a] = list(iter_samples(tgz, indexed=indexed, max_audio_bytes=MiB))
        assert a.problem == "audio member a.flac is 3.0 MiB, over the 1 MiB limit"  # type: ignore[union-attr]


def test_a_member_over_the_read_chunk_is_read_whole(tmp_path: Path) -> None:
    data = bytes(range(256)) * (12 * 1024 + 3)  # 3 MiB and a bit: several chunks
    tar = python_tar(tmp_path / "t.tar", [("a.json", b"{}"), ("a.wav", data)])
    for indexed in (False, True):
        [a] = list(iter_samples(tar, indexed=indexed))
        assert a.audio == data  # type: ignore[union-attr]

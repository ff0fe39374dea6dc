"""The tar reader on grouped tars: samples, problems, damage."""

from __future__ import annotations

import gzip
import io
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from tar_faults import write_empty_tar, write_non_tar, write_truncated_tar

from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.shards import reader
from tartok_tui.shards.reader import (
    Sample,
    TarDamage,
    Ungrouped,
    count_samples,
    iter_samples,
    scan_tar,
    split_key,
)


def small_tar(path: Path, n: int = 5, seed: int = 0, **kwargs) -> list:
    """A quick tar: short WAV clips."""
    kwargs.setdefault("audio_format", "wav")
    kwargs.setdefault("min_s", 0.3)
    kwargs.setdefault("max_s", 0.6)
    return write_emilia_tar(path, n, seed=seed, **kwargs)


def write_members(path: Path, members: list[tuple[str, bytes | None]]) -> Path:
    """A tar of the given (name, data) members; data None makes a directory."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def split(items: list) -> tuple[list[Sample], list[TarDamage]]:
    samples = [i for i in items if isinstance(i, Sample)]
    damage = [i for i in items if isinstance(i, TarDamage)]
    return samples, damage


def member_spans(path: Path) -> list[tuple[str, int, int]]:
    """(name, header offset, end of data) of each member."""
    with tarfile.open(path) as tar:
        return [(m.name, m.offset, m.offset_data + m.size) for m in tar.getmembers()]


# ---------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("abc.mp3", ("abc", "mp3")),
        ("EN/abc.json", ("EN/abc", "json")),
        ("a/b.c/abc.x.flac", ("a/b.c/abc", "x.flac")),
        ("README", None),
        ("dir/.hidden", None),
        ("./abc.mp3", ("abc", "mp3")),
        ("././d/abc.json", ("d/abc", "json")),
    ],
)
def test_split_key_follows_webdataset(name: str, expected: tuple[str, str] | None) -> None:
    assert split_key(name) == expected


# ---------------------------------------------------------------------- good tars


def test_good_tar_yields_every_sample_in_order(tmp_path: Path) -> None:
    written = small_tar(tmp_path / "a.tar", n=6)
    samples, damage = split(list(iter_samples(tmp_path / "a.tar")))
    assert damage == []
    assert [s.key for s in samples] == [w.key for w in written]
    assert [s.index for s in samples] == list(range(6))
    for sample, spec in zip(samples, written, strict=True):
        assert sample.problem is None
        assert sample.meta == spec.meta
        assert sample.audio_ext == "wav"
        assert sample.audio is not None and sample.audio[:4] == b"RIFF"
    assert count_samples(tmp_path / "a.tar") == 6


def test_audio_is_the_first_present_extension_in_preference_order(tmp_path: Path) -> None:
    path = write_members(
        tmp_path / "t.tar",
        [("k.flac", b"FLAC"), ("k.json", b"{}"), ("k.wav", b"WAVE"), ("k.txt", b"text")],
    )
    [sample] = list(iter_samples(path, audio_exts=("wav", "flac")))
    assert (sample.audio_ext, sample.audio) == ("wav", b"WAVE")
    [sample] = list(iter_samples(path, audio_exts=("flac", "wav")))
    assert (sample.audio_ext, sample.audio) == ("flac", b"FLAC")
    [sample] = list(iter_samples(path, audio_exts=("mp3",)))
    assert sample.audio is None and "no audio" in (sample.problem or "")


def test_directories_and_keyless_members_are_skipped(tmp_path: Path) -> None:
    path = write_members(
        tmp_path / "t.tar",
        [
            ("EN", None),
            ("EN/a.json", b'{"text": "x"}'),
            ("EN/a.wav", b"A"),
            ("EN/README", b"about"),
            ("EN/b.json", b'{"text": "y"}'),
            ("EN/b.wav", b"B"),
        ],
    )
    samples, damage = split(list(iter_samples(path)))
    assert damage == []
    assert [(s.key, s.audio, s.problem) for s in samples] == [
        ("EN/a", b"A", None),
        ("EN/b", b"B", None),
    ]
    assert count_samples(path) == 2


def test_extensions_match_case_insensitively(tmp_path: Path) -> None:
    path = write_members(tmp_path / "t.tar", [("a.JSON", b"{}"), ("a.WAV", b"A")])
    [sample] = list(iter_samples(path))
    assert sample.problem is None and sample.audio_ext == "wav"


def test_gzip_compressed_tar_is_read(tmp_path: Path) -> None:
    written = small_tar(tmp_path / "a.tar", n=3)
    (tmp_path / "b.tar").write_bytes(gzip.compress((tmp_path / "a.tar").read_bytes()))
    samples, damage = split(list(iter_samples(tmp_path / "b.tar")))
    assert damage == [] and [s.key for s in samples] == [w.key for w in written]
    assert count_samples(tmp_path / "b.tar") == 3


# ---------------------------------------------------------------------- problem samples


@pytest.mark.parametrize(
    ("kind", "problem"),
    [("no_audio", "no audio member"), ("no_json", "no json member"), ("bad_json", "invalid JSON")],
)
def test_broken_sample_gets_a_problem_and_the_rest_are_fine(
    tmp_path: Path, kind: str, problem: str
) -> None:
    written = small_tar(tmp_path / "a.tar", n=5, broken={2: kind})
    samples, damage = split(list(iter_samples(tmp_path / "a.tar")))
    assert damage == []
    assert [s.key for s in samples] == [w.key for w in written]
    assert problem in (samples[2].problem or "")
    assert all(s.problem is None for i, s in enumerate(samples) if i != 2)
    assert count_samples(tmp_path / "a.tar") == 5


@pytest.mark.parametrize("indexed", [False, True])
def test_json_the_parser_cannot_handle_costs_its_sample_alone(
    tmp_path: Path, indexed: bool
) -> None:
    # 200,000 nested brackets: json.loads raises RecursionError, not a ValueError.
    written = small_tar(tmp_path / "a.tar", n=5, broken={2: "nested_json"})
    samples, damage = split(list(iter_samples(tmp_path / "a.tar", indexed=indexed)))
    assert damage == [] and [s.key for s in samples] == [w.key for w in written]
    assert samples[2].meta is None
    assert "invalid JSON: RecursionError" in (samples[2].problem or "")
    assert all(s.problem is None and s.meta for i, s in enumerate(samples) if i != 2)
    assert count_samples(tmp_path / "a.tar") == 5  # what the worker checks before commit


def test_metadata_no_writer_could_write_back_is_a_problem(tmp_path: Path) -> None:
    """Parsed is not enough: nesting a writer's recursion cannot follow, or a lone
    surrogate UTF-8 cannot hold, would fail the whole tar at the writer."""
    deep = b'{"a": ' + b"[" * 150 + b"]" * 150 + b"}"
    fine = b'{"a": ' + b"[" * 98 + b"]" * 98 + b"}"  # 99 levels with the object: written
    path = write_members(
        tmp_path / "t.tar",
        [("a.json", deep), ("a.wav", b"A"), ("b.json", b'{"text": "x\\ud800y"}'),
         ("b.wav", b"B"), ("c.json", fine), ("c.wav", b"C")],
    )  # fmt: skip
    a, b, c = list(iter_samples(path))
    assert "unwritable JSON metadata: nested deeper than 100 levels" in (a.problem or "")
    assert "unwritable JSON metadata: a string that is not valid Unicode" in (b.problem or "")
    assert a.meta is None and b.meta is None
    assert c.problem is None and c.meta is not None


def test_running_out_of_host_memory_parsing_json_is_not_the_sample_s_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memory(raw: bytes) -> object:
        raise MemoryError

    path = write_members(tmp_path / "t.tar", [("a.json", b"{}"), ("a.wav", b"A")])
    monkeypatch.setattr(reader.json, "loads", no_memory)
    with pytest.raises(MemoryError):
        list(iter_samples(path))


def test_json_that_is_not_an_object_is_a_problem(tmp_path: Path) -> None:
    path = write_members(tmp_path / "t.tar", [("a.json", b"[1, 2]"), ("a.wav", b"A")])
    [sample] = list(iter_samples(path))
    assert sample.meta is None and "not an object" in (sample.problem or "")


@pytest.mark.parametrize("kind", ["undecodable_audio", "empty_audio", "too_long"])
def test_audio_defects_pass_the_reader_with_their_bytes(tmp_path: Path, kind: str) -> None:
    # The reader cannot judge audio; the decoder gives these their error records.
    small_tar(tmp_path / "a.tar", n=3, broken={1: kind}, too_long_s=2.0)
    samples, damage = split(list(iter_samples(tmp_path / "a.tar")))
    assert damage == [] and len(samples) == 3
    assert samples[1].problem is None and samples[1].audio is not None


def test_non_adjacent_repeated_key_stops_the_stream_and_the_index_merges_it(
    tmp_path: Path,
) -> None:
    path = write_members(
        tmp_path / "t.tar",
        [
            ("a.json", b"{}"),
            ("a.wav", b"A"),
            ("b.json", b"{}"),
            ("b.wav", b"B"),
            ("a.json", b"{}"),
            ("a.wav", b"A2"),
        ],
    )
    items = list(iter_samples(path))
    assert [(s.index, s.key) for s in items if isinstance(s, Sample)] == [(0, "a"), (1, "b")]
    assert items[-1] == Ungrouped(after_index=2, key="a", member="a.json")
    # Indexed, the key is one sample (exactly once in the output), its repeats a problem.
    samples, damage = split(list(iter_samples(path, indexed=True)))
    assert damage == [] and [s.key for s in samples] == ["a", "b"]
    assert samples[0].audio == b"A"
    assert "duplicate members: a.json, a.wav" in (samples[0].problem or "")
    assert samples[1].problem is None
    scan = scan_tar(path)
    assert scan.keys == ["a", "b"] and not scan.grouped and count_samples(path) == 2


def test_duplicate_member_within_a_sample_is_a_problem(tmp_path: Path) -> None:
    path = write_members(tmp_path / "t.tar", [("a.json", b"{}"), ("a.wav", b"A"), ("a.wav", b"A2")])
    [sample] = list(iter_samples(path))
    assert "duplicate members: a.wav" in (sample.problem or "")
    assert sample.audio == b"A"


# ---------------------------------------------------------------------- damage


def assert_prefix_then_damage(path: Path, full_keys: list[str], full_audio: list[bytes]) -> int:
    """The reader's contract on a damaged tar; returns how many samples survived."""
    items = list(iter_samples(path))  # never raises
    samples, damage = split(items)
    assert len(damage) == 1 and items[-1] is damage[0]
    n = len(samples)
    assert damage[0].after_index == n
    assert [s.key for s in samples] == full_keys[:n]
    assert [s.audio for s in samples] == full_audio[:n]
    assert all(s.problem is None for s in samples)
    scan = scan_tar(path)
    assert scan.keys == full_keys[:n] and scan.damage is not None
    return n


def test_truncated_tar_keeps_samples_before_the_damage_at_every_offset(tmp_path: Path) -> None:
    small_tar(tmp_path / "a.tar", n=6)
    full = [s for s in iter_samples(tmp_path / "a.tar") if isinstance(s, Sample)]
    keys, audio = [s.key for s in full], [s.audio for s in full]
    spans = member_spans(tmp_path / "a.tar")
    end_of_data = -(-spans[-1][2] // 512) * 512
    offsets = set(range(0, end_of_data, 1531))
    for _, header, data_end in spans:
        offsets |= {header, header + 1, header + 511, header + 512, data_end - 1, data_end}
    offsets |= {end_of_data, end_of_data + 100}
    survivors = {}
    for offset in sorted(offsets):
        cut = write_truncated_tar(tmp_path / "a.tar", tmp_path / "cut.tar", offset)
        survivors[offset] = assert_prefix_then_damage(cut, keys, audio)
    # Members alternate json, audio. A cut in sample k's audio keeps the k
    # samples before it; a cut in its json header keeps only k - 1, because
    # sample k - 1 might have had more members behind the cut.
    for j, (_name, header, _end) in enumerate(spans):
        k = j // 2
        assert survivors[header + 1] == (k if j % 2 else max(k - 1, 0))
    # Cut after the last member but before the end-of-archive block: the last
    # sample might have continued, so it is not passed on as good.
    assert survivors[end_of_data] == 5


def test_truncated_audio_after_its_json_names_the_incomplete_sample(tmp_path: Path) -> None:
    written = small_tar(tmp_path / "a.tar", n=4)
    spans = member_spans(tmp_path / "a.tar")
    name, header, data_end = spans[5]  # sample 2's audio; its json (spans[4]) is complete
    assert name.endswith(".wav")
    cut = write_truncated_tar(tmp_path / "a.tar", tmp_path / "cut.tar", (header + data_end) // 2)
    items = list(iter_samples(cut))
    samples, [damage] = split(items)
    assert [s.key for s in samples] == [w.key for w in written[:2]]
    assert damage.after_index == 2
    assert written[2].key in damage.reason


def test_corrupt_header_mid_tar_ends_with_damage(tmp_path: Path) -> None:
    written = small_tar(tmp_path / "a.tar", n=4)
    data = bytearray((tmp_path / "a.tar").read_bytes())
    header = member_spans(tmp_path / "a.tar")[4][1]  # sample 2's first member
    data[header : header + 100] = b"\xff" * 100
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    samples, [damage] = split(list(iter_samples(tmp_path / "bad.tar")))
    # Sample 1 is held back too: members of it could have followed the bad header.
    assert [s.key for s in samples] == [written[0].key]
    assert damage.after_index == 1 and "corrupt" in damage.reason
    assert written[1].key in damage.reason
    assert scan_tar(tmp_path / "bad.tar").keys == [written[0].key]


def test_truncated_gzip_tar_ends_with_damage(tmp_path: Path) -> None:
    small_tar(tmp_path / "a.tar", n=4)
    packed = gzip.compress((tmp_path / "a.tar").read_bytes())
    (tmp_path / "cut.tar").write_bytes(packed[: len(packed) * 2 // 3])
    items = list(iter_samples(tmp_path / "cut.tar"))
    samples, [damage] = split(items)
    assert len(samples) < 4 and damage.after_index == len(samples)


def test_non_tar_file_is_damage_at_index_zero(tmp_path: Path) -> None:
    path = write_non_tar(tmp_path / "x.tar")
    [damage] = list(iter_samples(path))
    assert isinstance(damage, TarDamage) and damage.after_index == 0
    assert "not a readable tar" in damage.reason
    assert scan_tar(path).damage is not None and count_samples(path) == 0


def test_zero_byte_file_is_damage_at_index_zero(tmp_path: Path) -> None:
    (tmp_path / "x.tar").write_bytes(b"")
    [damage] = list(iter_samples(tmp_path / "x.tar"))
    assert isinstance(damage, TarDamage) and damage.after_index == 0


@pytest.mark.parametrize("with_dir", [False, True])
def test_empty_tar_is_recorded_damage(tmp_path: Path, with_dir: bool) -> None:
    if with_dir:
        path = write_members(tmp_path / "x.tar", [("EN", None)])
    else:
        path = write_empty_tar(tmp_path / "x.tar")
    assert list(iter_samples(path)) == [TarDamage(0, "empty tar: no samples")]
    assert scan_tar(path).damage == TarDamage(0, "empty tar: no samples")


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(iter_samples(tmp_path / "gone.tar"))


def test_memory_stays_flat_with_the_number_of_members(tmp_path: Path) -> None:
    def peak(n: int) -> int:
        members = []
        for i in range(n):
            members += [(f"k{i:05d}.json", b"{}"), (f"k{i:05d}.wav", b"x" * 200)]
        path = write_members(tmp_path / f"m{n}.tar", members)
        tracemalloc.start()
        for _ in iter_samples(path):
            pass
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(200), peak(4000)
    # 20x the members; keeping every TarInfo (as tarfile does by default) costs
    # about 1 KB each, i.e. several MB here.
    assert large < small + 1_000_000, (small, large)

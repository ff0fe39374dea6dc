"""Tars on object storage, against a real S3 protocol server on 127.0.0.1: listed, streamed
with bounded read-ahead, read indexed with range reads, and read through an outage."""

from __future__ import annotations

import gzip
import threading
import time
from pathlib import Path

import pytest
from s3_support import FAST_FAIL, PATIENT, SECRET, S3Server, ensure_buckets
from tar_makers import gnu_tar, needs_gnu_tar, python_tar, sample_dir

from tartok_tui.shards.discover import InputError, discover_shards
from tartok_tui.shards.reader import (
    Sample,
    TarDamage,
    Ungrouped,
    count_samples,
    iter_samples,
    scan_tar,
)
from tartok_tui.storage import (
    Access,
    InputUnavailable,
    RetryEvent,
    RetryPolicy,
    filesystem,
    open_input,
)

BUCKET = "tartok-in"


@pytest.fixture
def running_s3(s3: S3Server) -> S3Server:
    """The server, started again if a test left it stopped."""
    if not s3.running:
        s3.start()
    return s3


def access(**kwargs) -> Access:
    kwargs.setdefault("options", FAST_FAIL)
    return Access(**kwargs)


def put(local: Path, key: str) -> str:
    ensure_buckets(BUCKET)
    fs, _ = filesystem(f"s3://{BUCKET}", FAST_FAIL)
    fs.put_file(str(local), f"{BUCKET}/{key}")
    return f"s3://{BUCKET}/{key}"


def big_tar(path: Path, n: int = 40, size: int = 200_000) -> Path:
    members = []
    for i in range(n):
        audio = bytes((i * 7 + j) % 251 for j in range(size))
        members += [(f"k{i:03d}.json", b'{"i": %d}' % i), (f"k{i:03d}.wav", audio)]
    return python_tar(path, members)


def test_shards_under_a_prefix_are_listed_as_urls(running_s3: S3Server, tmp_path: Path) -> None:
    tar = python_tar(tmp_path / "t.tar", [("a.json", b"{}"), ("a.wav", b"A")])
    for key in ["ds/b.tar", "ds/a.tar.gz", "ds/sub/c.tar", "ds/notes.txt", "ds/d.tar.zst"]:
        put(tar, key)
    found = discover_shards(f"s3://{BUCKET}/ds", access=access())
    assert found.tars == [f"s3://{BUCKET}/ds/a.tar.gz", f"s3://{BUCKET}/ds/b.tar"]
    assert found.ignored == ["d.tar.zst"]
    deep = discover_shards(f"s3://{BUCKET}/ds/", recursive=True, access=access())
    assert deep.tars[-1] == f"s3://{BUCKET}/ds/sub/c.tar"
    with pytest.raises(InputError, match="nothing found"):
        discover_shards(f"s3://{BUCKET}/no-such-prefix", access=access())


def test_a_remote_tar_reads_like_the_local_one(running_s3: S3Server, tmp_path: Path) -> None:
    tar = big_tar(tmp_path / "t.tar", n=12, size=30_000)
    gz = tmp_path / "t.tar.gz"
    gz.write_bytes(gzip.compress(tar.read_bytes()))
    for local in (tar, gz):
        url = put(local, f"same/{local.name}")
        a = access(read_ahead=64 * 1024)
        assert list(iter_samples(url, access=a)) == list(iter_samples(local))
        assert list(iter_samples(url, indexed=True, access=a)) == list(iter_samples(local))
        assert scan_tar(url, access=a) == scan_tar(local)
        assert count_samples(url, access=a) == 12


@needs_gnu_tar
def test_an_ungrouped_remote_tar_is_read_indexed_with_range_reads(
    running_s3: S3Server, tmp_path: Path
) -> None:
    sample_dir(tmp_path / "src", 10, long_paths=True)
    tar = gnu_tar(tmp_path / "src", tmp_path / "x.tar", "pax")
    url = put(tar, "ungrouped/x.tar")
    streamed = list(iter_samples(url, ("mp3",), access=access()))
    assert isinstance(streamed[-1], Ungrouped)
    remote = list(iter_samples(url, ("mp3",), indexed=True, access=access()))
    assert remote == list(iter_samples(tar, ("mp3",), indexed=True))
    assert len(remote) == 10 and all(s.problem is None for s in remote)  # type: ignore[union-attr]
    assert scan_tar(url, access=access()).keys == [s.key for s in remote]  # type: ignore[union-attr]


def test_streaming_reads_ahead_a_bounded_amount(
    running_s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs.core

    tar = big_tar(tmp_path / "t.tar", n=60, size=200_000)  # 24 MB
    url = put(tar, "big/t.tar")
    fetched: list[int] = []
    original = s3fs.core.S3File._fetch_range

    def counting(self, start: int, end: int) -> bytes:
        fetched.append(end - start)
        return original(self, start, end)

    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", counting)
    items = iter_samples(url, access=access(read_ahead=1 << 20))
    first = next(items)
    assert isinstance(first, Sample) and first.key == "k000"
    assert sum(fetched) < 3 << 20, fetched  # not the 24 MB: the first megabytes only
    assert max(fetched) <= (1 << 20) + 512 * 1024, fetched
    rest = list(items)
    assert len(rest) == 59 and sum(fetched) >= tar.stat().st_size - 10240
    assert max(fetched) <= (1 << 20) + 512 * 1024  # read ahead never grows


def fetch_log(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every range an S3 file object fetches from now on."""
    import s3fs.core

    fetched: list[int] = []
    original = s3fs.core.S3File._fetch_range

    def counting(self, start: int, end: int) -> bytes:
        fetched.append(end - start)
        return original(self, start, end)

    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", counting)
    return fetched


@needs_gnu_tar
@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_a_ranged_scan_reads_headers_and_small_members_only(
    running_s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    # Long member names (GNU long-name or PAX headers), ~100 KB audio members and a JSON.
    written = sample_dir(tmp_path / "src", 40, long_paths=True, txt=False)
    for w in written:
        (tmp_path / "src" / f"{w.key}.mp3").write_bytes(w.audio * (100_000 // len(w.audio) + 1))
    tar = gnu_tar(tmp_path / "src", tmp_path / "x.tar", fmt, sort=True)
    url = put(tar, f"ranged/{fmt}.tar")
    fetched = fetch_log(monkeypatch)
    scan = scan_tar(url, access=access(), ranged=True)
    assert scan == scan_tar(tar) and scan.count == 40 and not scan.compressed
    # One request per sample (its JSON and the next header lie in one window),
    # a few KiB each: not the 4 MB of audio.
    assert len(fetched) <= 40 + 2 and sum(fetched) < 40 * 5 * 1024 < tar.stat().st_size / 20
    assert max(fetched) <= 8 << 10


def test_a_ranged_scan_streams_a_compressed_tar(
    running_s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tar = big_tar(tmp_path / "t.tar", n=10, size=50_000)
    gz = tmp_path / "t.tar.gz"
    gz.write_bytes(gzip.compress(tar.read_bytes()))
    url = put(gz, "ranged/t.tar.gz")
    fetched = fetch_log(monkeypatch)
    scan = scan_tar(url, access=access(), ranged=True)
    assert scan.keys == scan_tar(tar).keys and scan.compressed
    assert sum(fetched) >= gz.stat().st_size  # read through, in read-ahead sized requests
    assert len(fetched) <= 4


@pytest.mark.parametrize("indexed", [False, True], ids=["streamed", "indexed"])
def test_a_server_outage_mid_tar_is_retried_from_the_offset_reached(
    running_s3: S3Server, tmp_path: Path, indexed: bool
) -> None:
    tar = big_tar(tmp_path / "t.tar", n=30, size=100_000)
    url = put(tar, "outage/t.tar")
    expected = list(iter_samples(tar))
    events: list[RetryEvent] = []
    failed = threading.Event()

    def on_retry(event: RetryEvent) -> None:
        events.append(event)
        failed.set()

    items = iter_samples(
        url,
        indexed=indexed,
        access=access(read_ahead=256 * 1024, retry=PATIENT, on_retry=on_retry),
    )
    head = [next(items) for _ in range(5)]
    running_s3.stop()

    def restart() -> None:
        failed.wait(timeout=120)  # the reader has met the outage...
        time.sleep(3)  # ...which lasts a few seconds
        running_s3.start()

    restarter = threading.Thread(target=restart)
    restarter.start()
    try:
        rest = list(items)
    finally:
        restarter.join()
    assert head + rest == expected  # the same bytes, nothing recorded as damage
    assert not any(isinstance(i, TarDamage) for i in rest)
    assert len(events) >= 2 and all(e.offset > 0 for e in events)
    assert all(SECRET not in str(e) for e in events)


def test_a_server_gone_for_good_is_input_unavailable_not_damage(
    running_s3: S3Server, tmp_path: Path
) -> None:
    tar = big_tar(tmp_path / "t.tar", n=20, size=100_000)
    url = put(tar, "gone/t.tar")
    quick = RetryPolicy(tries=3, first_delay_s=0.05, max_delay_s=0.1)
    for indexed in (False, True):
        running_s3.start() if not running_s3.running else None
        items = iter_samples(
            url, indexed=indexed, access=access(read_ahead=128 * 1024, retry=quick)
        )
        seen = [next(items) for _ in range(2)]
        running_s3.stop()
        with pytest.raises(InputUnavailable) as err:
            seen += list(items)
        assert not any(isinstance(i, TarDamage) for i in seen)
        assert "after 3 tries" in str(err.value) and SECRET not in str(err.value)
        assert str(err.value).startswith(f"cannot read {url} at byte ")


def test_a_missing_object_raises_file_not_found(running_s3: S3Server) -> None:
    with pytest.raises(FileNotFoundError):
        open_input(f"s3://{BUCKET}/no/such.tar", access=access())
    with pytest.raises(FileNotFoundError):
        list(iter_samples(f"s3://{BUCKET}/no/such.tar", access=access()))


def test_reads_return_exactly_what_was_asked(running_s3: S3Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4000
    (tmp_path / "blob").write_bytes(data)
    url = put(tmp_path / "blob", "blob")
    for sequential in (True, False):
        with open_input(url, sequential=sequential, access=access(read_ahead=10_000)) as f:
            assert f.size == len(data)
            assert f.read(5) == data[:5]
            f.seek(700_000)
            assert f.read(100_000) == data[700_000:800_000]
            assert f.read() == data[800_000:] and f.read(10) == b""
            f.seek(-10, 2)
            assert f.tell() == len(data) - 10 and f.read(100) == data[-10:]


def test_leaving_an_indexed_read_early_stops_its_range_readers(
    running_s3: S3Server, tmp_path: Path
) -> None:
    from tar_makers import shuffled_members, written_samples

    tar = python_tar(tmp_path / "t.tar", shuffled_members(written_samples(40)))
    url = put(tar, "early/t.tar")
    items = iter_samples(url, indexed=True, access=access(parallel_reads=4))
    assert [next(items).key for _ in range(2)] == ["k000", "k001"]  # type: ignore[union-attr]
    assert any(t.name.startswith("tar-ranges") for t in threading.enumerate())
    items.close()  # what a worker does when it aborts a lease
    assert not any(t.name.startswith("tar-ranges") for t in threading.enumerate())

"""verify from the commit records (the output and one listing of the input), verify --deep
(every input's headers again), and the fallback for outputs committed without records;
locally and over S3 on 127.0.0.1, where the default reads no input data."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from output_support import process, small_tar
from s3_support import FAST_FAIL, S3Server, ensure_buckets

from tartok_tui.output.scan import scan_output
from tartok_tui.output.verify import verify
from tartok_tui.storage import Access, filesystem


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """Three tars, processed as a worker does (commit records included)."""
    inp, out = tmp_path / "in", tmp_path / "out"
    for i, name in enumerate(("a", "b", "c")):
        small_tar(inp / f"{name}.tar", 4, seed=i, broken={1: "no_json"} if name == "b" else {})
        process(inp, out, inp / f"{name}.tar")
    return inp, out


def rename_sample(tar: Path, old: str, new: str) -> None:
    """Rewrite ``tar`` with sample ``old`` renamed ``new``: a key of the same length keeps
    the tar's size; its mtime is kept too (a copy that preserved times)."""
    assert len(old) == len(new)
    before = os.stat(tar)
    with tarfile.open(tar) as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers()]  # type: ignore[union-attr]
        fmt = src.format
    with tarfile.open(tar, "w", format=fmt) as dst:
        for member, data in members:
            if member.name.startswith(old + "."):
                member.name = new + member.name[len(old) :]
            dst.addfile(member, io.BytesIO(data))
    os.utime(tar, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(tar).st_size == before.st_size


def drop_line(path: Path, index: int) -> str:
    """Remove line ``index`` of a JSONL file; its key."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:index] + lines[index + 1 :]), encoding="utf-8")
    return json.loads(lines[index])["key"]


def test_verify_checks_the_recorded_keys_without_scanning_any_input(dataset) -> None:
    inp, out = dataset
    report = verify(inp, out)
    assert report.ok, report.to_dict()
    assert report.scanned == 0 and {t.keys_from for t in report.tars} == {"record"}
    assert report.samples_expected == 12 and report.to_dict()["tars_scanned"] == 0


def test_a_missing_sample_is_found_by_both_modes(dataset) -> None:
    inp, out = dataset
    lost = drop_line(out / "c.jsonl", 2)
    for deep in (False, True):
        report = verify(inp, out, deep=deep)
        [bad] = report.problems
        assert (bad.tar, bad.lost_keys, report.lost_samples) == ("c.tar", [lost], 1)
        assert bad.keys_from == ("scan" if deep else "record") and not bad.input_changed


def test_an_input_of_another_size_is_reported_as_changed(dataset) -> None:
    inp, out = dataset
    small_tar(inp / "b.tar", 5, seed=1, broken={1: "no_json"})  # a sample more
    [bad] = verify(inp, out).problems
    assert bad.tar == "b.tar" and bad.input_changed and bad.input_changed.startswith("size ")
    assert "input changed: size" in bad.notes()[0]
    assert verify(inp, out).changed_inputs == ["b.tar"]


def test_an_input_modified_in_place_is_reported_by_its_mtime(dataset) -> None:
    inp, out = dataset
    tar = inp / "a.tar"
    os.utime(tar, ns=(os.stat(tar).st_atime_ns, os.stat(tar).st_mtime_ns + 10**9))
    [bad] = verify(inp, out).problems
    assert bad.tar == "a.tar" and bad.input_changed == "modified since it was tokenized"
    assert bad.lost_keys == [] and bad.unknown_keys == []  # its keys may be the same
    # A deep scan that finds the recorded keys in an input of the recorded size settles it
    # (a copy that did not keep mtimes): a note, not a problem.
    deep = verify(inp, out, deep=True)
    assert deep.ok and deep.modified_inputs == ["a.tar"]
    assert (
        deep.tars[0].input_note
        == "modified since it was tokenized; the recorded keys are all there"
    )


def test_deep_finds_changed_content_of_the_same_size_and_mtime(dataset) -> None:
    inp, out = dataset
    keys = [json.loads(line)["key"] for line in (out / "a.jsonl").read_text().splitlines()]
    renamed = keys[2][:-1] + ("9" if keys[2][-1] != "9" else "8")
    rename_sample(inp / "a.tar", keys[2], renamed)
    assert verify(inp, out).ok  # size and mtime as recorded: the default cannot know
    report = verify(inp, out, deep=True)
    [bad] = report.problems
    assert bad.tar == "a.tar" and bad.keys_from == "scan"
    assert bad.input_changed == "its keys differ from those recorded at commit (1 new, 1 gone)"
    assert (bad.lost_keys, bad.unknown_keys) == ([renamed], [keys[2]])
    assert report.scanned == 3 and report.deep


def test_an_output_without_commit_records_falls_back_to_scanning(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    small_tar(inp / "new.tar", 3, seed=1)
    small_tar(inp / "old.tar", 4, seed=2, broken={0: "no_audio"})
    process(inp, out, inp / "new.tar")
    process(inp, out, inp / "old.tar", record=False)  # committed by an older version
    report = verify(inp, out)
    assert report.ok, report.to_dict()
    assert [(t.tar, t.keys_from, t.expected) for t in report.tars] == [
        ("new.tar", "record", 3),
        ("old.tar", "scan", 4),
    ]
    assert report.scanned == 1
    lost = drop_line(out / "old.jsonl", 0)
    assert [t.lost_keys for t in verify(inp, out).problems] == [[lost]]


def test_records_of_the_keys_a_reader_met_are_counted_apart(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    small_tar(inp / "a.tar", 3, seed=1)
    small_tar(inp / "b.tar", 3, seed=2)
    process(inp, out, inp / "a.tar")
    process(inp, out, inp / "b.tar", scanned=False)  # as a worker reading from a store
    report = verify(inp, out)
    assert report.ok and [t.recorded_from for t in report.tars] == ["scan", "stream"]
    assert report.reader_keys == 1 and verify(inp, out, deep=True).reader_keys == 0


def test_an_unreadable_commit_record_is_a_problem_and_the_input_is_scanned(dataset) -> None:
    inp, out = dataset
    (out / "meta" / "b.json").write_text("{not json")
    [bad] = verify(inp, out).problems
    assert bad.tar == "b.tar" and bad.keys_from == "scan" and bad.expected == 4
    assert bad.record_unreadable and bad.lost_keys == []


def test_a_tar_without_output_is_counted_from_its_record_or_not_at_all(dataset) -> None:
    inp, out = dataset
    (out / "c.jsonl").unlink()  # as if the attempt died between the record and the tokens
    small_tar(inp / "d.tar", 2, seed=9)  # never committed
    report = verify(inp, out)
    assert report.missing_tars == ["c.tar", "d.tar"] and report.uncounted == 1
    c, d = report.problems
    assert (c.expected, c.lost, d.expected, d.lost) == (4, 4, None, 0)
    assert d.notes() == ["no output (samples not counted)"]
    assert verify(inp, out, deep=True).lost_samples == 4 + 2


def test_checks_run_in_parallel_and_report_progress(dataset) -> None:
    inp, out = dataset
    seen: list[tuple[int, int]] = []
    report = verify(inp, out, jobs=2, progress=lambda done, total: seen.append((done, total)))
    assert report.ok and [t.tar for t in report.tars] == ["a.tar", "b.tar", "c.tar"]
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]


# ---------------------------------------------------------------------- over S3

BUCKET = "tartok-verify"


@pytest.fixture
def running_s3(s3: S3Server) -> S3Server:
    if not s3.running:
        s3.start()
    return s3


def access() -> Access:
    return Access(options=FAST_FAIL)


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """(operation, object key) of every request s3fs sends from now on."""
    import s3fs.core

    log: list[tuple[str, str]] = []
    original = s3fs.core.S3FileSystem._call_s3

    async def logged(self, method, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = getattr(method, "__name__", str(method))
        log.append((name, str(kwargs.get("Key", kwargs.get("Prefix", "")))))
        return await original(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.core.S3FileSystem, "_call_s3", logged)
    # Listings page through botocore's paginator, not _call_s3.
    iterdir = s3fs.core.S3FileSystem._iterdir

    def listed(self, bucket, *args, **kwargs):  # type: ignore[no-untyped-def]
        log.append(("list_objects_v2", str(kwargs.get("prefix", ""))))
        return iterdir(self, bucket, *args, **kwargs)

    monkeypatch.setattr(s3fs.core.S3FileSystem, "_iterdir", listed)
    yield log


def upload(local: Path, prefix: str) -> str:
    ensure_buckets(BUCKET)
    fs, _ = filesystem(f"s3://{BUCKET}", FAST_FAIL)
    fs.put(str(local) + "/", f"{BUCKET}/{prefix}/", recursive=True)
    return f"s3://{BUCKET}/{prefix}"


def test_over_s3_verify_and_status_read_no_input_data_and_see_a_changed_etag(
    running_s3: S3Server, tmp_path: Path, requests: list[tuple[str, str]]
) -> None:
    local_in, local_out = tmp_path / "in", tmp_path / "out"
    for i in range(3):
        small_tar(local_in / f"t{i}.tar", 4, seed=i)
    url_in = upload(local_in, "in")
    for i in range(3):  # as a worker reading the S3 input records it: the ETag
        process(url_in, local_out, f"{url_in}/t{i}.tar")  # type: ignore[arg-type]
    url_out = upload(local_out, "out")

    requests.clear()
    report = verify(url_in, url_out, access=access())
    assert report.ok and report.scanned == 0, report.to_dict()
    assert scan_output(url_out, access()).tars_done == 3
    on_input = [(op, key) for op, key in requests if key.startswith("in")]
    assert {op for op, _ in on_input} == {"list_objects_v2"}  # one listing, no reads

    # Another content of the same size: its ETag says so (the default), and its keys (deep).
    key = json.loads((local_out / "t1.jsonl").read_text().splitlines()[0])["key"]
    rename_sample(local_in / "t1.tar", key, key[:-1] + "9")
    fs, _ = filesystem(url_in, FAST_FAIL)
    fs.put_file(str(local_in / "t1.tar"), f"{BUCKET}/in/t1.tar")
    [bad] = verify(url_in, url_out, access=access()).problems
    assert bad.tar == "t1.tar" and bad.input_changed and bad.input_changed.startswith("ETag ")
    assert bad.lost_keys == []  # the recorded keys are all there
    deeper = verify(url_in, url_out, recursive=True, access=access())  # listed by find
    assert deeper.changed_inputs == ["t1.tar"] and deeper.scanned == 0
    requests.clear()
    deep = verify(url_in, url_out, access=access(), deep=True)
    [bad] = deep.problems
    assert bad.tar == "t1.tar" and bad.lost_keys == [key[:-1] + "9"] and deep.scanned == 3
    assert bad.input_changed and "; its keys differ from those recorded" in bad.input_changed
    reads = [key for op, key in requests if op == "get_object" and key.startswith("in")]
    assert {"in/t0.tar", "in/t1.tar", "in/t2.tar"} <= set(reads)  # headers, by ranges

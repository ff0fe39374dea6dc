"""Output status from files alone, and verify: every input sample exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from output_support import process, small_tar
from tar_faults import write_non_tar, write_truncated_tar

from tartok_tui.output.journal import JournalEntry, append_journal
from tartok_tui.output.paths import tar_output_paths
from tartok_tui.output.scan import scan_output
from tartok_tui.output.verify import verify
from tartok_tui.output.writer import TarWriter, make_record
from tartok_tui.shards.discover import InputError


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """Three tars (one with a broken sample), all processed."""
    inp, out = tmp_path / "in", tmp_path / "out"
    small_tar(inp / "EN" / "a.tar", 4, seed=1)
    small_tar(inp / "EN" / "b.tar", 4, seed=2, broken={1: "no_json"})
    small_tar(inp / "EN" / "c.tar", 3, seed=3)
    for tar in sorted((inp / "EN").glob("*.tar")):
        process(inp / "EN", out, tar)
    return inp / "EN", out


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


# ---------------------------------------------------------------------- status


def test_status_counts_done_tars_lines_and_errors(dataset) -> None:
    _, out = dataset
    status = scan_output(out, counts=True)
    assert [t.tar for t in status.done] == ["a.tar", "b.tar", "c.tar"]
    assert status.tars_done == 3 and status.lines == 10 and status.error_records == 1
    assert [t.tar for t in status.with_errors] == ["b.tar"]
    assert status.partial == [] and status.orphan_errors == [] and status.journals == []
    assert status.records == 3
    json.dumps(status.to_dict())


def test_status_without_counts_is_the_listing_alone(dataset) -> None:
    _, out = dataset
    status = scan_output(out)
    assert [t.tar for t in status.done] == ["a.tar", "b.tar", "c.tar"]
    assert [t.tar for t in status.with_errors] == ["b.tar"]  # an errors file exists
    assert (status.lines, status.error_records, status.counted) == (None, None, False)
    assert status.tokens_bytes == sum(p.stat().st_size for p in out.glob("*.jsonl")) > 0
    data = json.loads(json.dumps(status.to_dict()))
    assert data["done"]["a.tar"] == {
        "lines": None,
        "errors": None,
        "format": "jsonl",
        "bytes": (out / "a.jsonl").stat().st_size,
    }


def test_status_counts_a_tar_without_a_commit_record_from_its_tokens_file(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    small_tar(inp / "old.tar", 3, seed=1, broken={2: "no_json"})
    small_tar(inp / "new.tar", 4, seed=2)
    process(inp, out, inp / "old.tar", record=False)
    process(inp, out, inp / "new.tar")
    (out / "new.jsonl").write_text("")  # the count of a recorded tar is the record's
    status = scan_output(out, counts=True)
    assert [(t.tar, t.has_record, t.lines, t.errors) for t in status.done] == [
        ("new.tar", True, 4, 0),
        ("old.tar", False, 2, 1),
    ]


def test_status_sees_partial_stale_orphan_and_journal_files(dataset) -> None:
    inp, out = dataset
    small_tar(inp / "d.tar", 2, seed=4)
    in_flight = TarWriter(out, inp, inp / "d.tar", lease_id=5)
    in_flight.add(0, make_record("x", {}, [1], [2]))
    leftover = TarWriter(out, inp, inp / "a.tar", lease_id=6)  # a done tar's dead attempt
    leftover.add(0, make_record("x", {}, [1], [2]))
    orphan = out / "errors" / "e.jsonl"
    orphan.write_text('{"key": null}\n')
    journal = tar_output_paths(out, inp, inp / "c.tar").journal
    append_journal(journal, [JournalEntry.crash(0, "k0")])
    (out / "run-summary.json").write_text('{"tars_done": 3}')
    (out / "logs").mkdir()
    (out / "logs" / "w.jsonl").write_text("{}\n")  # not a tar's output

    status = scan_output(out)
    assert [t.tar for t in status.done] == ["a.tar", "b.tar", "c.tar"]
    assert status.partial_tars == ["d.tar"]
    assert [p.tar for p in status.stale_partial] == ["a.tar"]
    assert status.orphan_errors == ["e.tar"]
    assert status.journals == ["c.tar"]
    assert status.summary == {"tars_done": 3}
    assert json.loads(json.dumps(status.to_dict()))["partial_tars"] == ["d.tar"]
    in_flight.abort()
    leftover.abort()


def test_status_of_nested_output(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    small_tar(inp / "EN" / "x.tar", 2, seed=1)
    small_tar(inp / "ZH" / "x.tar", 2, seed=2)
    for lang in ("EN", "ZH"):
        process(inp, out, inp / lang / "x.tar")
    assert [t.tar for t in scan_output(out).done] == ["EN/x.tar", "ZH/x.tar"]


# ---------------------------------------------------------------------- verify


def test_verify_accepts_a_complete_output(dataset) -> None:
    inp, out = dataset
    report = verify(inp, out)
    assert report.ok
    assert report.samples_expected == 11 and report.lost_samples == 0
    assert json.loads(json.dumps(report.to_dict()))["ok"] is True


def test_verify_reports_a_missing_tar(dataset) -> None:
    inp, out = dataset
    (out / "c.jsonl").unlink()
    report = verify(inp, out)
    assert not report.ok
    assert report.missing_tars == ["c.tar"] and report.lost_samples == 3


def test_verify_checks_only_the_selected_range(dataset) -> None:
    inp, out = dataset
    (out / "c.jsonl").unlink()
    assert verify(inp, out, 0, 2).ok
    assert [t.tar for t in verify(inp, out, 2).tars] == ["c.tar"]


def test_verify_finds_a_lost_sample(dataset) -> None:
    inp, out = dataset
    path = out / "a.jsonl"
    lines = lines_of(path)
    path.write_text("".join(lines[:1] + lines[2:]), encoding="utf-8")
    report = verify(inp, out)
    assert not report.ok and report.lost_samples == 1
    [check] = [t for t in report.tars if not t.ok]
    assert check.lost_keys == [json.loads(lines[1])["key"]]


def test_verify_finds_a_duplicate_line(dataset) -> None:
    inp, out = dataset
    path = out / "a.jsonl"
    lines = lines_of(path)
    path.write_text("".join([*lines, lines[2]]), encoding="utf-8")
    report = verify(inp, out)
    assert not report.ok and report.duplicate_keys == 1
    assert report.to_dict()["problems"]["a.tar"]["duplicate_keys"] == [json.loads(lines[2])["key"]]


def test_verify_finds_a_key_in_both_jsonl_and_errors(dataset) -> None:
    inp, out = dataset
    key = json.loads(lines_of(out / "c.jsonl")[0])["key"]
    errors = out / "errors" / "c.jsonl"
    errors.parent.mkdir(exist_ok=True)
    errors.write_text(json.dumps({"tar": "c.tar", "key": key, "index": 0, "stage": "x"}) + "\n")
    report = verify(inp, out)
    assert not report.ok and [t.duplicate_keys for t in report.tars if t.duplicate_keys] == [[key]]


def test_verify_finds_a_key_that_is_not_in_the_input(dataset) -> None:
    inp, out = dataset
    with open(out / "a.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(make_record("stranger", {}, [1], [2])) + "\n")
    report = verify(inp, out)
    assert not report.ok and report.unknown_keys == 1


def test_verify_finds_a_corrupt_line(dataset) -> None:
    inp, out = dataset
    path = out / "a.jsonl"
    lines = lines_of(path)
    path.write_text("".join([*lines[:-1], lines[-1][:20]]), encoding="utf-8")
    report = verify(inp, out)
    assert not report.ok
    assert [t.corrupt_lines for t in report.tars] == [1, 0, 0]


def test_verify_accepts_recorded_damage_and_flags_unrecorded_damage(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    small_tar(tmp_path / "full.tar", 5, seed=1)
    write_truncated_tar(tmp_path / "full.tar", inp / "cut.tar", 60_000)
    write_non_tar(inp / "junk.tar")
    for tar in sorted(inp.glob("*.tar")):
        process(inp, out, tar)
    # Damage is known from a scan of the input: --deep, or a tar without a commit record.
    report = verify(inp, out, deep=True)
    assert report.ok, report.to_dict()
    assert report.damaged_inputs == ["cut.tar", "junk.tar"]
    cut, junk = report.tars
    assert 0 < cut.expected == cut.lines < 5 and cut.tar_errors == 1
    assert junk.expected == 0 and junk.tar_errors == 1
    assert verify(inp, out).ok and verify(inp, out).damaged_inputs == []

    (out / "errors" / "junk.jsonl").unlink()
    report = verify(inp, out, deep=True)
    assert not report.ok and [t.tar for t in report.tars if t.damage_unrecorded] == ["junk.tar"]
    (out / "meta" / "junk.json").unlink()  # as committed by an older version: scanned
    report = verify(inp, out)
    assert not report.ok and [t.tar for t in report.tars if t.damage_unrecorded] == ["junk.tar"]


def test_verify_of_a_missing_input_dir_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        verify(tmp_path / "nope", tmp_path)


# ---------------------------------------------------------------------- verify --recursive


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A nested input (top.tar, EN/a.tar, EN/b.tar, ZH/deep/c.tar), every tar processed."""
    inp, out = tmp_path / "in", tmp_path / "out"
    for i, rel in enumerate(("top.tar", "EN/a.tar", "EN/b.tar", "ZH/deep/c.tar")):
        small_tar(inp / rel, 2 + i, seed=i)
        process(inp, out, inp / rel)
    return inp, out


def test_verify_without_recursive_checks_the_top_directory_only(tree) -> None:
    inp, out = tree
    report = verify(inp, out)
    assert [t.tar for t in report.tars] == ["top.tar"] and report.ok
    assert report.selection == "tars [0, end), this directory only"


def test_verify_recursive_checks_every_subdirectory_and_finds_a_problem_deep_down(tree) -> None:
    inp, out = tree
    report = verify(inp, out, recursive=True)
    assert [t.tar for t in report.tars] == ["EN/a.tar", "EN/b.tar", "ZH/deep/c.tar", "top.tar"]
    assert report.ok and report.samples_expected == 2 + 3 + 4 + 5
    (out / "ZH" / "deep" / "c.jsonl").unlink()
    report = verify(inp, out, recursive=True)
    assert report.missing_tars == ["ZH/deep/c.tar"] and report.lost_samples == 5
    [bad] = report.problems
    assert bad.notes() == ["no output"]
    data = report.to_dict()
    assert data["recursive"] is True and list(data["problems"]) == ["ZH/deep/c.tar"]


def test_an_index_range_with_recursive_counts_tars_across_subdirectories(tree) -> None:
    inp, out = tree
    (out / "top.jsonl").unlink()  # index 3: outside the range below
    report = verify(inp, out, from_index=1, to_index=3, recursive=True)
    assert [t.tar for t in report.tars] == ["EN/b.tar", "ZH/deep/c.tar"]
    assert report.ok
    assert report.selection == "tars [1, 3), with subdirectories"
    data = report.to_dict()
    assert (data["from_index"], data["to_index"], data["tars"]) == (1, 3, 2)
    assert not verify(inp, out, from_index=3, recursive=True).ok


def test_a_problem_row_carries_everything_a_table_shows(dataset) -> None:
    inp, out = dataset
    path = out / "b.jsonl"
    lines = lines_of(path)
    path.write_text("".join([*lines[1:], lines[1], "not json\n"]), encoding="utf-8")
    [bad] = verify(inp, out).problems
    assert (bad.tar, bad.expected, bad.lines, bad.error_records, bad.tar_errors) == (
        "b.tar",
        4,
        3,
        1,
        0,
    )
    lost = json.loads(lines[0])["key"]
    assert (bad.lost, bad.duplicates, bad.unknown, bad.corrupt_lines) == (1, 1, 0, 1)
    assert bad.formats == ["jsonl"]
    assert bad.notes() == ["1 unreadable lines", f"e.g. {lost}"]
    row = bad.to_dict()
    assert (row["lost"], row["lost_keys"], row["corrupt_lines"]) == (1, [lost], 1)

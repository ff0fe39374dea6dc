"""Parquet output: one row per good sample in the tar's order, typed columns, the same commit
rules as JSONL, byte-identical reruns, and status/verify/resume that understand both formats."""

from __future__ import annotations

import glob
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from output_support import EMILIA_META, files_under, process, small_tar
from tar_faults import write_truncated_tar

from tartok_tui.output import parquet as parquet_module
from tartok_tui.output.paths import partial_suffix, remove_stale_partials, tar_output_paths
from tartok_tui.output.read import read_rows
from tartok_tui.output.scan import scan_output
from tartok_tui.output.verify import verify
from tartok_tui.output.writer import OutputFormatConflict, TarWriter, make_record


def record(i: int, **meta) -> dict:
    key = f"k{i:03d}"
    return make_record(key, {**EMILIA_META, "id": key, **meta}, [i, 4095], [i, 8191, 0] * (i + 1))


def write(dirs, records: dict[int, dict], errors: dict[int, str] = {}, **kwargs) -> Path:  # noqa: B006
    inp, out, tar = dirs
    with TarWriter(out, inp, tar, output_format="parquet", **kwargs) as writer:
        for i, rec in records.items():
            writer.add(i, rec)
        for i, reason in errors.items():
            writer.add_error(i, f"k{i:03d}", "decode", reason)
        writer.commit()
    return out / "sub" / "X.parquet"


FIXED_COLUMNS = {
    "key": pa.string(),
    "language": pa.string(),
    "text": pa.string(),
    "global_tokens": pa.list_(pa.uint16()),
    "semantic_tokens": pa.list_(pa.uint16()),
}
"""Every tokens file's first columns, in order (written out here, not taken from the code)."""


def columns_of(path: Path) -> dict[str, pa.DataType]:
    return {f.name: f.type for f in pq.read_schema(path)}


# ---------------------------------------------------------------------- the file


def test_rows_follow_the_tar_order_with_the_fixed_columns_first(dirs) -> None:
    order = list(range(30))
    random.Random(5).shuffle(order)
    inp, out, tar = dirs
    with TarWriter(out, inp, tar, output_format="parquet") as writer:
        for i in order:
            if i % 4 == 1:
                writer.add_error(i, f"k{i:03d}", "decode", f"bad {i}")
            else:
                writer.add(i, record(i))
        writer.commit(expected_samples=30)
    path = out / "sub" / "X.parquet"
    assert files_under(out) == ["errors/sub/X.jsonl", "sub/X.parquet"]
    assert columns_of(path) == {
        **FIXED_COLUMNS,
        "id": pa.string(),
        "wav": pa.string(),
        "duration": pa.float64(),
        "speaker": pa.string(),
        "dnsmos": pa.float64(),
    }
    rows = list(read_rows(path))
    assert [r["key"] for r in rows] == [f"k{i:03d}" for i in range(30) if i % 4 != 1]
    assert rows[1] == record(2)  # every field, tokens as ints, in the record's order
    assert list(rows[1]) == list(record(2))
    errors = [json.loads(line) for line in (out / "errors" / "sub" / "X.jsonl").open()]
    assert [e["index"] for e in errors] == [i for i in range(30) if i % 4 == 1]
    meta = pq.read_metadata(path)
    assert {meta.row_group(0).column(c).compression for c in range(meta.num_columns)} == {"ZSTD"}


def test_parquet_and_jsonl_hold_the_same_records(dirs, tmp_path: Path) -> None:
    inp, _, tar = dirs
    records = {i: record(i) for i in range(12)}
    for output_format in ("jsonl", "parquet"):
        with TarWriter(tmp_path / output_format, inp, tar, output_format=output_format) as w:
            for i, rec in records.items():
                w.add(i, rec)
            w.commit()
    jsonl = list(read_rows(tmp_path / "jsonl" / "sub" / "X.jsonl"))
    parquet = list(read_rows(tmp_path / "parquet" / "sub" / "X.parquet"))
    assert jsonl == parquet == list(records.values())


def test_metadata_columns_are_typed_when_consistent_and_json_text_otherwise(dirs) -> None:
    rows = {
        0: make_record(
            "a",
            {"language": "en", "n": 1, "mix": 1, "flag": True, "nested": {"x": [1]}, "odd": 1},
            [1],
            [2],
        ),
        1: make_record(
            "b",
            {"language": "zh", "n": 2, "mix": 2.5, "flag": False, "nested": [1, 2], "odd": "1"},
            [1],
            [2],
        ),
        2: make_record("c", {"text": 42, "late": None, "n": None}, [1], [2]),
    }
    path = write(dirs, rows)
    assert columns_of(path) == {
        **FIXED_COLUMNS,
        "n": pa.int64(),
        "mix": pa.float64(),
        "flag": pa.bool_(),
        "nested": pa.string(),
        "odd": pa.string(),
        "late": pa.string(),  # null in every row
    }
    info = json.loads(pq.read_schema(path).metadata[b"tartok"])
    assert info == {"version": 1, "json_columns": ["nested", "odd"]}
    raw = pq.read_table(path).to_pylist()
    assert [r["odd"] for r in raw] == ["1", '"1"', None]  # JSON text: 1 and "1" stay apart
    assert [r["text"] for r in raw] == [None, None, "42"]  # text is always a string
    a, b, c = read_rows(path)
    assert (a["nested"], b["nested"], c["nested"]) == ({"x": [1]}, [1, 2], None)
    assert (a["odd"], b["odd"]) == (1, "1")
    assert (a["mix"], b["mix"], a["n"], c["n"], c["language"]) == (1.0, 2.5, 1, None, None)


def test_ints_too_big_for_a_float_or_int64_fall_back_to_json_text(dirs) -> None:
    huge = 2**64
    rows = {
        0: make_record("a", {"big": 2**53 + 1, "bigger": huge}, [1], [2]),
        1: make_record("b", {"big": 0.5, "bigger": 1}, [1], [2]),
    }
    path = write(dirs, rows)
    types = columns_of(path)
    assert types["big"] == types["bigger"] == pa.string()
    a, b = read_rows(path)
    assert (a["big"], b["big"], a["bigger"]) == (2**53 + 1, 0.5, huge)


def test_a_token_outside_uint16_is_refused(dirs) -> None:
    inp, out, tar = dirs
    with TarWriter(out, inp, tar, output_format="parquet") as writer:
        with pytest.raises(ValueError, match="uint16"):
            writer.add(0, make_record("a", {}, [1], [70000]))
        with pytest.raises(ValueError, match="uint16"):
            writer.add(0, make_record("a", {}, [-1], [1]))


def test_a_tar_without_good_samples_gets_an_empty_but_valid_file(dirs) -> None:
    path = write(dirs, {}, {0: "x", 1: "y"})
    table = pq.read_table(path)
    assert table.num_rows == 0
    assert table.column_names == list(FIXED_COLUMNS)


def test_large_tars_are_written_in_row_groups(dirs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parquet_module, "ROW_GROUP_ROWS", 4)
    path = write(dirs, {i: record(i) for i in range(10)})
    assert pq.ParquetFile(path).num_row_groups == 3
    assert [r["key"] for r in read_rows(path)] == [f"k{i:03d}" for i in range(10)]


def test_same_results_in_any_order_give_byte_identical_parquet(tmp_path: Path) -> None:
    outputs = []
    for seed, lease in ((1, 3), (2, 9)):
        inp, out = tmp_path / "in", tmp_path / f"out{seed}"
        (inp / "sub").mkdir(parents=True, exist_ok=True)
        order = list(range(40))
        random.Random(seed).shuffle(order)
        with TarWriter(
            out, inp, inp / "sub" / "X.tar", lease_id=lease, output_format="parquet"
        ) as writer:
            for i in order:
                if i % 5 == 0:
                    writer.add_error(i, f"k{i:03d}", "too_long", "70.0 s > 60 s")
                else:
                    writer.add(i, record(i, extra={"i": i}))
            writer.add_error(None, None, "tar", "truncated")
            writer.commit()
        outputs.append({f: (out / f).read_bytes() for f in files_under(out)})
    assert outputs[0] == outputs[1]
    assert set(outputs[0]) == {"sub/X.parquet", "errors/sub/X.jsonl"}
    # Nothing in the file depends on when or where it was written; only the library's name.
    meta = pq.read_metadata(pa.BufferReader(outputs[0]["sub/X.parquet"]))
    assert meta.created_by.startswith("parquet-cpp-arrow version ")
    assert set(meta.metadata) == {b"ARROW:schema", b"tartok"}


# ---------------------------------------------------------------------- commit


def test_nothing_final_exists_until_commit_and_abort_leaves_nothing(dirs) -> None:
    inp, out, tar = dirs
    writer = TarWriter(out, inp, tar, lease_id=7, output_format="parquet")
    writer.add(0, record(0))
    writer.add_error(1, "k001", "decode", "x")
    assert all(f.startswith(".partial/") for f in files_under(out))
    assert f".partial/out/sub/X.parquet.{partial_suffix(7)}" in files_under(out)
    writer.abort()
    assert files_under(out) == []


def test_a_live_writer_keeps_its_partial_files_fresh_though_parquet_writes_at_commit(
    dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import time

    from tartok_tui.output import writer as writer_module

    inp, out, tar = dirs
    writer = TarWriter(out, inp, tar, lease_id=7, output_format="parquet")
    writer.add_error(0, "k000", "decode", "x")
    parts = sorted((out / ".partial").rglob("*.part"))
    day_ago = time.time() - 86400
    for part in parts:
        os.utime(part, (day_ago, day_ago))
    writer.add(1, record(1))
    assert [p.stat().st_mtime for p in parts] == [day_ago] * 2  # touched at most once a minute
    monkeypatch.setattr(writer_module, "PARTIAL_TOUCH_S", 0.0)
    writer.add(2, record(2))
    assert len(parts) == 2 and all(time.time() - p.stat().st_mtime < 600 for p in parts)
    assert parts[1].name.startswith("X.parquet.") and parts[1].stat().st_size == 0  # no write
    writer.abort()


def test_commit_publishes_the_errors_first_then_the_parquet(
    dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    out = dirs[1]
    renamed: list[str] = []
    real_replace = os.replace

    def replace(src, dst) -> None:
        renamed.append(Path(dst).relative_to(out).as_posix())
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write(dirs, {0: record(0)}, {1: "x"})
    assert renamed == ["errors/sub/X.jsonl", "sub/X.parquet"]


# ---------------------------------------------------------------------- the other format


def test_a_tar_done_in_one_format_is_done_for_a_run_in_the_other(dirs) -> None:
    inp, out, tar = dirs
    with TarWriter(out, inp, tar, output_format="jsonl") as writer:
        writer.add(0, record(0))
        writer.add_error(1, "k001", "decode", "x")
        writer.commit()
    before = {f: (out / f).read_bytes() for f in files_under(out)}
    paths = tar_output_paths(out, inp, tar, "parquet")
    assert paths.tokens == out / "sub" / "X.parquet"
    assert paths.done_format() == "jsonl" and paths.is_done()
    assert paths.done_formats() == ["jsonl"]
    # A writer that gets there anyway (another run raced it) refuses to add a second file.
    with TarWriter(out, inp, tar, output_format="parquet") as writer:
        writer.add(0, record(0))
        writer.add(1, record(1))
        with pytest.raises(OutputFormatConflict, match=r"already done as sub/X\.jsonl"):
            writer.commit()
    assert {f: (out / f).read_bytes() for f in files_under(out)} == before


def test_unknown_output_format_is_refused(dirs) -> None:
    inp, out, tar = dirs
    with pytest.raises(ValueError, match="unknown output format"):
        TarWriter(out, inp, tar, output_format="csv")


def test_stale_parquet_partials_of_dead_writers_are_swept(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    paths = tar_output_paths(
        tmp_path / "out", tmp_path / "in", tmp_path / "in" / "X.tar", "parquet"
    )
    suffix = partial_suffix(1).replace(f"-{__import__('os').getpid()}-", f"-{dead.pid}-")
    stale = [paths.partial_tokens(suffix), paths.partial_errors(suffix)]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PAR1")
    assert stale[0].name.startswith("X.parquet.") and stale[1].name.startswith("X.jsonl.")
    assert sorted(remove_stale_partials(tmp_path / "out")) == sorted(stale)


# ---------------------------------------------------------------------- status / verify


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, Path]:
    """a.tar and c.tar done as Parquet, b.tar (one broken sample) as JSONL."""
    inp, out = tmp_path / "in", tmp_path / "out"
    small_tar(inp / "a.tar", 4, seed=1)
    small_tar(inp / "b.tar", 4, seed=2, broken={1: "no_json"})
    small_tar(inp / "c.tar", 3, seed=3, broken={0: "no_audio"})
    for name, output_format in (("a", "parquet"), ("b", "jsonl"), ("c", "parquet")):
        process(inp, out, inp / f"{name}.tar", output_format)
    return inp, out


def test_status_counts_both_formats(mixed) -> None:
    inp, out = mixed
    small_tar(inp / "d.tar", 2, seed=4)
    in_flight = TarWriter(out, inp, inp / "d.tar", lease_id=5, output_format="parquet")
    leftover = TarWriter(out, inp, inp / "a.tar", lease_id=6, output_format="parquet")
    status = scan_output(out, counts=True)
    assert [(t.tar, t.format, t.lines, t.errors) for t in status.done] == [
        ("a.tar", "parquet", 4, 0),
        ("b.tar", "jsonl", 3, 1),
        ("c.tar", "parquet", 2, 1),
    ]
    assert status.formats == {"jsonl": 1, "parquet": 2}
    assert status.partial_tars == ["d.tar"] and [p.kind for p in status.partial] == ["parquet"]
    assert [p.tar for p in status.stale_partial] == ["a.tar"]
    assert status.both_formats == [] and status.orphan_errors == []
    data = json.loads(json.dumps(status.to_dict()))
    assert data["formats"] == {"jsonl": 1, "parquet": 2}
    size = (out / "a.parquet").stat().st_size
    assert data["done"]["a.tar"] == {"lines": 4, "errors": 0, "format": "parquet", "bytes": size}
    in_flight.abort()
    leftover.abort()


def test_verify_accepts_a_mixed_output_and_finds_problems_in_parquet(mixed) -> None:
    inp, out = mixed
    report = verify(inp, out)
    assert report.ok, report.to_dict()
    assert [t.formats for t in report.tars] == [["parquet"], ["jsonl"], ["parquet"]]
    assert report.samples_expected == 11

    table = pq.read_table(out / "a.parquet")
    lost = table.column("key")[1].as_py()
    pq.write_table(table.take([0, 2, 3, 3]), out / "a.parquet")  # one lost, one twice
    check = verify(inp, out).tars[0]
    assert not check.ok and check.lost_keys == [lost] and check.duplicates == 1
    assert check.notes() == [f"e.g. {lost}"]


def test_a_tar_done_in_both_formats_is_a_problem(mixed) -> None:
    inp, out = mixed
    process(inp, out / "elsewhere", inp / "b.tar", "parquet")
    (out / "elsewhere" / "b.parquet").rename(out / "b.parquet")
    status = scan_output(out)
    assert status.both_formats == ["b.tar"]
    assert [t.format for t in status.done if t.tar == "b.tar"] == ["jsonl"]
    report = verify(inp, out)
    [check] = report.problems
    assert check.tar == "b.tar" and check.both_formats and check.duplicates == 3
    assert "done in jsonl and parquet: keep one" in check.notes()


def test_a_truncated_parquet_file_is_unreadable_not_a_crash(mixed, tmp_path: Path) -> None:
    inp, out = mixed
    path = out / "a.parquet"
    path.write_bytes(path.read_bytes()[:-100])
    # status counts a recorded tar from its commit record; without one it reads the footer.
    assert scan_output(out, counts=True).unreadable == []
    (out / "meta" / "a.json").unlink()
    status = scan_output(out, counts=True)
    assert [t.tar for t in status.unreadable] == ["a.tar"]
    report = verify(inp, out)
    [check] = report.problems
    assert check.tar == "a.tar" and check.unreadable and check.lost == 4
    assert check.notes()[0].startswith("output unreadable: a.parquet")


def test_verify_reads_a_damaged_tar_recorded_in_parquet(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    small_tar(tmp_path / "full.tar", 5, seed=1)
    write_truncated_tar(tmp_path / "full.tar", inp / "cut.tar", 60_000)
    process(inp, out, inp / "cut.tar", "parquet")
    report = verify(inp, out, deep=True)
    assert report.ok and report.damaged_inputs == ["cut.tar"]
    assert 0 < report.tars[0].lines < 5 and report.tars[0].tar_errors == 1


# ---------------------------------------------------------------------- loading


def test_the_outputs_load_as_one_dataset_with_pyarrow(mixed) -> None:
    """The README's loading recipe: every X.parquet under the output dir, nothing else."""
    inp, out = mixed
    (out / "b.jsonl").unlink()
    process(inp, out, inp / "b.tar", "parquet")
    files = sorted(glob.glob(str(out / "**" / "*.parquet"), recursive=True))
    table = ds.dataset(files, format="parquet").to_table()
    assert table.num_rows == 4 + 3 + 2
    assert table.schema.field("semantic_tokens").type == pa.list_(pa.uint16())

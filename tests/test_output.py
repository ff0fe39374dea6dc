"""Output paths and the TarWriter: ordered lines, atomic commit, identical reruns."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from output_support import EMILIA_META, files_under

from tartok_tui.output.paths import (
    RESERVED_TOP_DIRS,
    relative_tar_path,
    summary_path,
    tar_output_paths,
)
from tartok_tui.output.writer import (
    IncompleteTar,
    ReorderBufferFull,
    TarWriter,
    make_record,
)


def record(i: int) -> dict:
    return make_record(f"k{i:03d}", {**EMILIA_META, "id": f"k{i:03d}"}, [i, 1, 2], [i] * 5)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------- paths


def test_output_paths_mirror_the_input_tree(dirs) -> None:
    inp, out, tar = dirs
    paths = tar_output_paths(out, inp, tar)
    assert paths.jsonl == out / "sub" / "X.jsonl"
    assert paths.errors == out / "errors" / "sub" / "X.jsonl"
    assert paths.journal == out / ".partial" / "journal" / "sub" / "X.journal"
    partial = paths.partial_tokens("h-1-2.part")
    assert partial.is_relative_to(out / ".partial")
    assert paths.partial_errors("h-1-2.part").is_relative_to(out / ".partial")
    assert partial != paths.partial_errors("h-1-2.part")
    assert summary_path(out) == out / "run-summary.json"


def test_relative_paths_give_the_same_output(dirs, monkeypatch: pytest.MonkeyPatch) -> None:
    inp, out, tar = dirs
    monkeypatch.chdir(inp.parent)
    assert relative_tar_path("in", "in/sub/X.tar").as_posix() == "sub/X.tar"
    assert relative_tar_path("in", tar).as_posix() == "sub/X.tar"
    assert tar_output_paths("out", "in", tar).jsonl.resolve() == (out / "sub" / "X.jsonl")


def test_a_tar_outside_the_input_dir_is_refused(dirs, tmp_path: Path) -> None:
    inp, out, _ = dirs
    with pytest.raises(ValueError, match="not inside"):
        tar_output_paths(out, inp, tmp_path / "elsewhere.tar")


def test_gzipped_tars_name_their_output_like_plain_ones(dirs) -> None:
    inp, out, _ = dirs
    for name in ("X.tar", "X.tar.gz", "X.tgz"):
        paths = tar_output_paths(out, inp, inp / "sub" / name, "parquet")
        assert paths.tokens == out / "sub" / "X.parquet"
        assert paths.errors == out / "errors" / "sub" / "X.jsonl"
        assert paths.journal == out / ".partial" / "journal" / "sub" / "X.journal"


@pytest.mark.parametrize("top", sorted(RESERVED_TOP_DIRS))
def test_a_tar_whose_output_would_collide_is_refused(dirs, top: str) -> None:
    inp, out, _ = dirs
    with pytest.raises(ValueError, match="collide"):
        tar_output_paths(out, inp, inp / top / "X.tar")


# ---------------------------------------------------------------------- records


def test_record_has_fixed_leading_fields_then_metadata_in_order() -> None:
    meta = {
        "zeta": 1,
        "text": "hi",
        "key": "evil",
        "alpha": 2,
        "global_tokens": [9],
        "language": "en",
    }
    rec = make_record("k", meta, np.array([1, 2], dtype=np.int64), (np.int32(3),))
    assert list(rec) == [
        "key",
        "language",
        "text",
        "global_tokens",
        "semantic_tokens",
        "zeta",
        "alpha",
    ]
    assert rec["key"] == "k" and rec["global_tokens"] == [1, 2] and rec["semantic_tokens"] == [3]
    assert all(type(t) is int for t in rec["global_tokens"] + rec["semantic_tokens"])
    json.dumps(rec)  # numpy scalars would not serialise


def test_record_without_language_or_text_has_nulls() -> None:
    rec = make_record("k", None, [1], [2])
    assert rec == {
        "key": "k",
        "language": None,
        "text": None,
        "global_tokens": [1],
        "semantic_tokens": [2],
    }


# ---------------------------------------------------------------------- ordering


def test_out_of_order_results_are_written_in_sample_order(dirs) -> None:
    inp, out, tar = dirs
    order = list(range(50))
    random.Random(3).shuffle(order)
    with TarWriter(out, inp, tar) as writer:
        for i in order:
            if i % 7 == 3:
                writer.add_error(i, f"k{i:03d}", "decode", f"bad {i}")
            else:
                writer.add(i, record(i))
        writer.commit(expected_samples=50)
    lines = read_jsonl(out / "sub" / "X.jsonl")
    assert [r["key"] for r in lines] == [f"k{i:03d}" for i in range(50) if i % 7 != 3]
    errors = read_jsonl(out / "errors" / "sub" / "X.jsonl")
    assert [e["index"] for e in errors] == [i for i in range(50) if i % 7 == 3]
    assert errors[0] == {
        "tar": "sub/X.tar",
        "key": "k003",
        "index": 3,
        "stage": "decode",
        "reason": "bad 3",
    }


def test_lines_are_utf8_json_with_the_fixed_key_order(dirs) -> None:
    inp, out, tar = dirs
    with TarWriter(out, inp, tar) as writer:
        writer.add(0, make_record("k", EMILIA_META, [1], [2]))
        writer.commit()
    raw = (out / "sub" / "X.jsonl").read_bytes()
    assert "héllo wörld 你好".encode() in raw  # not \\u escapes
    assert raw.startswith(b'{"key": "k", "language": "en", "text": ')
    assert raw.endswith(b"}\n")


def test_the_reorder_buffer_flushes_as_soon_as_predecessors_are_known(dirs) -> None:
    inp, out, tar = dirs
    with TarWriter(out, inp, tar) as writer:
        for i in range(10, 0, -1):
            writer.add(i, record(i))
        assert writer.pending == 10 and writer.next_index == 0
        writer.add_error(0, "k000", "decode", "x")  # errors advance the order too
        assert writer.pending == 0 and writer.next_index == 11
        assert writer.lines == 10 and writer.errors == 1
        writer.abort()


def test_the_reorder_buffer_is_bounded(dirs) -> None:
    inp, out, tar = dirs
    with TarWriter(out, inp, tar, max_pending=4) as writer:
        for i in range(1, 5):
            writer.add(i, record(i))
        with pytest.raises(ReorderBufferFull):
            writer.add(5, record(5))


def test_a_sample_gets_one_result_only(dirs) -> None:
    inp, out, tar = dirs
    with TarWriter(out, inp, tar) as writer:
        writer.add(0, record(0))
        writer.add(2, record(2))
        with pytest.raises(ValueError, match="already"):
            writer.add(0, record(0))
        with pytest.raises(ValueError, match="already"):
            writer.add_error(2, "k002", "decode", "x")
        with pytest.raises(ValueError, match="negative"):
            writer.add(-1, record(0))


def test_tar_errors_follow_the_sample_errors(dirs) -> None:
    inp, out, tar = dirs
    with TarWriter(out, inp, tar) as writer:
        writer.add_error(None, None, "tar", "truncated")
        writer.add(1, record(1))
        writer.add_error(0, "k000", "decode", "x")
        writer.commit()
    errors = read_jsonl(out / "errors" / "sub" / "X.jsonl")
    assert [(e["index"], e["stage"]) for e in errors] == [(0, "decode"), (None, "tar")]


# ---------------------------------------------------------------------- commit / abort


def test_nothing_final_exists_until_commit(dirs) -> None:
    inp, out, tar = dirs
    writer = TarWriter(out, inp, tar, lease_id=7)
    writer.add(0, record(0))
    writer.add_error(1, "k001", "decode", "x")
    writer.add(2, record(2))
    before = files_under(out)
    assert before and all(f.startswith(".partial/") for f in before)
    assert any(f"-{os.getpid()}-7." in f for f in before)
    writer.commit()
    assert files_under(out) == ["errors/sub/X.jsonl", "sub/X.jsonl"]
    assert writer.committed
    with pytest.raises(RuntimeError, match="committed"):
        writer.add(3, record(3))


def test_abort_leaves_nothing(dirs) -> None:
    inp, out, tar = dirs
    writer = TarWriter(out, inp, tar)
    writer.add(0, record(0))
    writer.add_error(1, "k001", "decode", "x")
    writer.abort()
    writer.abort()
    assert files_under(out) == []


def test_leaving_the_context_without_commit_aborts(dirs) -> None:
    inp, out, tar = dirs
    with pytest.raises(KeyError), TarWriter(out, inp, tar) as writer:
        writer.add(0, record(0))
        raise KeyError("worker failed")
    assert files_under(out) == []


def test_commit_refuses_to_lose_a_sample(dirs) -> None:
    inp, out, tar = dirs
    with TarWriter(out, inp, tar) as writer:
        writer.add(0, record(0))
        writer.add(2, record(2))
        with pytest.raises(IncompleteTar, match=r"\[1\]"):
            writer.commit()
        assert not (out / "sub" / "X.jsonl").exists()
        writer.add(1, record(1))
        with pytest.raises(IncompleteTar, match="expected 4"):
            writer.commit(expected_samples=4)
        writer.commit(expected_samples=3)
    assert len(read_jsonl(out / "sub" / "X.jsonl")) == 3


def test_a_tar_whose_every_sample_failed_still_counts_as_done(dirs) -> None:
    inp, out, tar = dirs
    with TarWriter(out, inp, tar) as writer:
        for i in range(3):
            writer.add_error(i, f"k{i}", "decode", "x")
        writer.commit()
    assert (out / "sub" / "X.jsonl").read_bytes() == b""
    assert len(read_jsonl(out / "errors" / "sub" / "X.jsonl")) == 3


def test_a_damaged_tar_with_no_samples_gets_an_empty_jsonl_and_its_error(dirs) -> None:
    inp, out, tar = dirs
    with TarWriter(out, inp, tar) as writer:
        writer.add_error(None, None, "tar", "not a readable tar")
        writer.commit(expected_samples=0)
    assert files_under(out) == ["errors/sub/X.jsonl", "sub/X.jsonl"]


def test_no_errors_means_no_errors_file_and_a_stale_one_is_removed(dirs) -> None:
    inp, out, tar = dirs
    stale = out / "errors" / "sub" / "X.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"key": "k000", "stage": "worker_crash"}\n')
    with TarWriter(out, inp, tar) as writer:
        writer.add(0, record(0))
        writer.commit()
    assert files_under(out) == ["sub/X.jsonl"]


def test_two_leases_of_one_tar_write_separate_partial_files(dirs) -> None:
    inp, out, tar = dirs
    first = TarWriter(out, inp, tar, lease_id=1)
    second = TarWriter(out, inp, tar, lease_id=2)
    first.add(0, record(0))
    second.add(0, record(1))
    first.abort()
    second.commit()
    assert read_jsonl(out / "sub" / "X.jsonl")[0]["key"] == "k001"
    assert files_under(out) == ["sub/X.jsonl"]


def test_same_results_in_any_order_give_byte_identical_files(tmp_path: Path) -> None:
    outputs = []
    for seed, lease in ((1, 3), (2, 9)):
        inp, out = tmp_path / "in", tmp_path / f"out{seed}"
        (inp / "sub").mkdir(parents=True, exist_ok=True)
        order = list(range(40))
        random.Random(seed).shuffle(order)
        with TarWriter(out, inp, inp / "sub" / "X.tar", lease_id=lease) as writer:
            for i in order:
                if i % 5 == 0:
                    writer.add_error(i, f"k{i:03d}", "too_long", "70.0 s > 60 s")
                else:
                    writer.add(i, record(i))
            writer.add_error(None, None, "tar", "truncated")
            writer.commit()
        outputs.append({f: (out / f).read_bytes() for f in files_under(out)})
    assert outputs[0] == outputs[1]
    assert set(outputs[0]) == {"sub/X.jsonl", "errors/sub/X.jsonl"}


def test_commit_syncs_data_then_renames_errors_before_the_jsonl(
    dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp, out, tar = dirs
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        events.append(("fsync", target.relative_to(out).as_posix()))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", Path(dst).relative_to(out).as_posix()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with TarWriter(out, inp, tar) as writer:
        writer.add(0, record(0))
        writer.add_error(1, "k001", "decode", "x")
        writer.commit()
    kinds = [(e[0], e[1].split("/")[0]) for e in events]
    assert kinds == [
        ("fsync", ".partial"),  # the JSONL's data
        ("fsync", ".partial"),  # the errors' data
        ("replace", "errors"),
        ("fsync", "errors"),  # its directory entry
        ("replace", "sub"),
        ("fsync", "sub"),
    ]


def test_stale_partials_are_those_of_dead_writers_here_or_untouched_for_a_day_anywhere(
    tmp_path: Path,
) -> None:
    import socket
    import subprocess
    import sys
    import time

    from tartok_tui.output.paths import PARTIAL_MAX_AGE_S, remove_stale_partials

    host = socket.gethostname().split(".")[0] or "host"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    paths = tar_output_paths(tmp_path / "out", tmp_path / "in", tmp_path / "in" / "sub" / "X.tar")
    old = time.time() - PARTIAL_MAX_AGE_S - 60
    stale = {
        paths.partial_tokens(f"{host}-{dead.pid}-3.part"): None,
        paths.partial_errors(f"{host}-{dead.pid}-3.part"): None,
        paths.partial_tokens(f"other-host-{dead.pid}-6.part"): old,  # another machine's, old
        paths.partial_errors(f"{host}-{os.getpid()}-7.part"): old,  # a pid since reused
    }
    kept = {
        paths.partial_tokens(f"{host}-{os.getpid()}-4.part"): None,  # a live writer here
        # Another machine's, touched within the day: its writer may be alive.
        paths.partial_tokens(f"other-host-{dead.pid}-5.part"): old + 120,
        paths.journal: old,  # the isolation journal is read by the next attempt
    }
    for path, mtime in {**stale, **kept}.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")
        if mtime is not None:
            os.utime(path, (mtime, mtime))
    assert sorted(remove_stale_partials(tmp_path / "out")) == sorted(stale)
    assert [p.exists() for p in [*stale, *kept]] == [False] * 4 + [True] * 3
    assert remove_stale_partials(tmp_path / "nothing-here") == []

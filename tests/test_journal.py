"""The isolation journal on the supervisor's disk: decided samples, one line each, that a
later run (or any worker) replays instead of tokenizing them again."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tartok_tui.output.journal import (
    CRASH_STAGE,
    JournalEntry,
    JournalError,
    append_journal,
    read_journal,
)
from tartok_tui.output.paths import tar_output_paths
from tartok_tui.output.writer import TarWriter, make_record
from tartok_tui.supervisor.isolation import JournalStore


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    inp, out = tmp_path / "in", tmp_path / "out"
    (inp / "EN").mkdir(parents=True)
    tar = inp / "EN" / "X.tar"
    tar.write_bytes(b"")
    return inp, out, tar


def rec(i: int) -> dict:
    return make_record(f"k{i}", {"text": f"t{i}", "language": "en", "score": i / 3}, [i], [i, i])


def journal_path(dirs) -> Path:
    inp, out, tar = dirs
    return tar_output_paths(out, inp, tar).journal


def test_decided_samples_are_read_back_as_they_were_written(dirs) -> None:
    path = journal_path(dirs)
    assert path == dirs[1] / ".partial" / "journal" / "EN" / "X.journal"
    assert read_journal(path) == {}
    entries = [
        JournalEntry(0, "k0", record=rec(0)),
        JournalEntry(1, "k1", stage="decode", reason="bad bytes"),
        JournalEntry.crash(2, "k2"),
    ]
    append_journal(path, entries[:2])
    append_journal(path, entries[2:])
    assert read_journal(path) == {e.index: e for e in entries}
    assert read_journal(path)[2].stage == CRASH_STAGE and read_journal(path)[2].is_error
    # The lease carries the same lines the file holds.
    assert [JournalEntry.from_line(e.to_line()) for e in entries] == entries


def test_a_torn_last_line_is_ignored_and_the_next_append_starts_a_clean_line(dirs) -> None:
    path = journal_path(dirs)
    append_journal(path, [JournalEntry(0, "k0", record=rec(0))])
    with open(path, "ab") as f:
        f.write(b'{"done": 1, "record": {"key": "k1", "langu')  # killed mid-write
    assert set(read_journal(path)) == {0}
    append_journal(path, [JournalEntry(1, "k1", record=rec(1))])
    for line in path.read_text().splitlines():
        json.loads(line)
    assert read_journal(path)[1].record == rec(1)


def test_begin_lines_of_an_older_journal_decide_nothing(dirs) -> None:
    path = journal_path(dirs)
    path.parent.mkdir(parents=True)
    path.write_text('{"begin": 0, "key": "k0"}\n{"done": 0, "record": {"key": "k0"}}\n'
                    '{"begin": 1, "key": "k1"}\n')  # fmt: skip
    assert list(read_journal(path)) == [0]


def test_corruption_before_the_last_line_is_an_error(dirs) -> None:
    path = journal_path(dirs)
    append_journal(path, [JournalEntry.crash(0, "k0")])
    path.write_bytes(b"garbage\n" + path.read_bytes())
    with pytest.raises(JournalError, match="line 1"):
        read_journal(path)


def test_a_journal_of_another_tar_is_refused_by_its_keys() -> None:
    JournalEntry(3, "k3", record=rec(3)).check_key("k3")
    with pytest.raises(JournalError, match="changed"):
        JournalEntry(3, "k3", record=rec(3)).check_key("other")


def test_replayed_outcomes_write_the_same_bytes_as_the_first_run(dirs, tmp_path: Path) -> None:
    inp, out, tar = dirs
    outcomes = [
        JournalEntry(i, f"k{i}", stage="decode", reason="bad")
        if i == 2
        else JournalEntry(i, f"k{i}", record=rec(i))
        for i in range(4)
    ]

    def write(output: Path, entries: list[JournalEntry]) -> tuple[bytes, bytes]:
        with TarWriter(output, inp, tar) as writer:
            for e in entries:
                if e.record is not None:
                    writer.add(e.index, e.record)
                else:
                    writer.add_error(e.index, e.key, e.stage or "", e.reason or "")
            writer.commit()
        return (output / "EN" / "X.jsonl").read_bytes(), (
            output / "errors" / "EN" / "X.jsonl"
        ).read_bytes()

    first = write(out, outcomes)
    append_journal(journal_path(dirs), outcomes)
    replayed = [
        JournalEntry.from_line(json.loads(json.dumps(e.to_line())))
        for e in read_journal(journal_path(dirs)).values()
    ]
    assert write(tmp_path / "out2", replayed) == first


def test_a_process_killed_mid_append_leaves_every_earlier_sample_decided(dirs) -> None:
    path = journal_path(dirs)
    # A real process that dies hard (no cleanup, no flush) halfway through a line.
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from tartok_tui.output.journal import JournalEntry, append_journal
        from tartok_tui.output.writer import make_record
        path = Path({str(path)!r})
        for i in range(3):
            append_journal(path, [JournalEntry(i, f"k{{i}}", record=make_record(f"k{{i}}", {{}}, [i], [i]))])
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.write(fd, b'{{"done": 3, "rec')
        os._exit(9)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == 9
    assert sorted(read_journal(path)) == [0, 1, 2]


async def test_the_store_keeps_journals_for_later_runs_and_drops_them_once_done(
    dirs, tmp_path: Path
) -> None:
    inp, out, tar = dirs
    other, done = inp / "EN" / "Y.tar", inp / "EN" / "Z.tar"
    warnings: list[str] = []
    store = JournalStore(out, inp, lambda level, slot, text: warnings.append(text))
    assert store.load([tar, other], [done]) == ({}, [])  # no journal folder at all
    store.record(tar, [JournalEntry(0, "k0", record=rec(0))])
    store.record(tar, [JournalEntry.crash(1, "k1")])
    store.record(done, [JournalEntry.crash(0, "z0")])  # a tar a later run finds done
    store.record(other, [JournalEntry.crash(0, "y0")])
    store.remove(other)  # committed: its journal has served
    await store.close()
    assert not store.path(other).exists() and warnings == []

    later = JournalStore(out, inp, lambda level, slot, text: warnings.append(text))
    journals, problems = later.load([tar, other], [done])
    assert problems == []
    assert journals == {
        tar: {0: JournalEntry(0, "k0", record=rec(0)), 1: JournalEntry.crash(1, "k1")}
    }
    assert not later.path(done).exists()  # a done tar's journal is removed

    later.path(tar).write_text("garbage\n")
    journals, problems = later.load([tar], [])
    assert journals == {} and "cannot be read" in problems[0] and not later.path(tar).exists()


async def test_a_journal_that_cannot_be_written_is_one_warning_and_the_run_goes_on(
    dirs,
) -> None:
    inp, out, tar = dirs
    out.mkdir()
    (out / ".partial").write_text("a file where the journal folder should be")
    warnings: list[str] = []
    store = JournalStore(out, inp, lambda level, slot, text: warnings.append(text))
    for i in range(3):
        store.record(tar, [JournalEntry.crash(i, f"k{i}")])
    await store.close()
    await asyncio.sleep(0)  # the callbacks run on the loop
    assert len(warnings) == 1 and "could not write the isolation journal" in warnings[0]

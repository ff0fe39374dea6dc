"""The isolation journal: finding the sample that kills a worker, and resuming past it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tartok_tui.output.journal import (
    CRASH_STAGE,
    IsolationJournal,
    JournalError,
    read_journal,
)
from tartok_tui.output.writer import TarWriter, make_record


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    inp, out = tmp_path / "in", tmp_path / "out"
    (inp / "EN").mkdir(parents=True)
    tar = inp / "EN" / "X.tar"
    tar.write_bytes(b"")
    return inp, out, tar


def rec(i: int) -> dict:
    return make_record(f"k{i}", {"text": f"t{i}", "language": "en", "score": i / 3}, [i], [i, i])


def open_journal(dirs) -> IsolationJournal:
    inp, out, tar = dirs
    return IsolationJournal.open(out, inp, tar)


def test_a_fresh_journal_has_nothing_decided(dirs) -> None:
    with open_journal(dirs) as journal:
        assert journal.completed == {} and journal.crashed == {}
        assert journal.outcome(0, "k0") is None
        assert journal.path == dirs[1] / ".partial" / "journal" / "EN" / "X.journal"


def test_the_sample_begun_but_not_done_is_the_crash(dirs) -> None:
    with open_journal(dirs) as journal:
        journal.begin(0, "k0")
        journal.done(0, rec(0))
        journal.begin(1, "k1")
        journal.done_error(1, "k1", "decode", "bad bytes")
        journal.begin(2, "k2")  # the process "dies" here
    with open_journal(dirs) as journal:
        assert set(journal.completed) == {0, 1} and journal.crashed == {2: "k2"}
        done0 = journal.outcome(0, "k0")
        assert done0 is not None and done0.record == rec(0) and not done0.is_error
        done1 = journal.outcome(1, "k1")
        assert done1 is not None and (done1.stage, done1.reason) == ("decode", "bad bytes")
        crash = journal.outcome(2, "k2")
        assert crash is not None and crash.is_error and crash.stage == CRASH_STAGE
        assert journal.outcome(3, "k3") is None  # never begun: tokenize it
    # The crash verdict was journalled: a later attempt does not see a crash again.
    state = read_journal(dirs[1] / ".partial" / "journal" / "EN" / "X.journal")
    assert state.crashed == {} and state.completed[2].stage == CRASH_STAGE


def test_every_attempt_finds_its_own_poison_sample(dirs) -> None:
    with open_journal(dirs) as journal:
        journal.begin(0, "k0")
    with open_journal(dirs) as journal:
        assert journal.outcome(0, "k0").stage == CRASH_STAGE
        journal.begin(1, "k1")
        journal.done(1, rec(1))
        journal.begin(2, "k2")
    with open_journal(dirs) as journal:
        assert sorted(journal.completed) == [0, 1] and journal.crashed == {2: "k2"}


def test_a_torn_last_line_is_dropped_and_appending_continues_cleanly(dirs) -> None:
    with open_journal(dirs) as journal:
        journal.begin(0, "k0")
        path = journal.path
    with open(path, "ab") as f:
        f.write(b'{"done": 0, "record": {"key": "k0", "langu')  # killed mid-write
    with open_journal(dirs) as journal:
        assert journal.crashed == {0: "k0"}
        journal.outcome(0, "k0")
        journal.begin(1, "k1")
        journal.done(1, rec(1))
    for line in path.read_text().splitlines():
        json.loads(line)
    assert read_journal(path).completed[1].record == rec(1)


def test_a_journal_of_another_tar_is_refused(dirs) -> None:
    with open_journal(dirs) as journal:
        journal.begin(0, "k0")
        journal.done(0, rec(0))
        journal.begin(1, "k1")
    with open_journal(dirs) as journal:
        with pytest.raises(JournalError, match="changed"):
            journal.outcome(0, "other")
        with pytest.raises(JournalError, match="changed"):
            journal.outcome(1, "other")


def test_corruption_before_the_last_line_is_an_error(dirs) -> None:
    with open_journal(dirs) as journal:
        journal.begin(0, "k0")
        path = journal.path
    path.write_bytes(b"garbage\n" + path.read_bytes())
    with pytest.raises(JournalError, match="line 1"):
        open_journal(dirs)


def test_replayed_outcomes_write_the_same_bytes_as_the_first_run(dirs, tmp_path: Path) -> None:
    inp, out, tar = dirs

    def outcomes(writer: TarWriter, journal: IsolationJournal | None) -> None:
        for i in range(4):
            if i == 2:
                writer.add_error(i, "k2", "decode", "bad")
                if journal:
                    journal.done_error(i, "k2", "decode", "bad")
            else:
                writer.add(i, rec(i))
                if journal:
                    journal.done(i, rec(i))

    with open_journal(dirs) as journal, TarWriter(out, inp, tar) as writer:
        outcomes(writer, journal)
        writer.commit()
    first = (out / "EN" / "X.jsonl").read_bytes(), (out / "errors" / "EN" / "X.jsonl").read_bytes()

    out2 = tmp_path / "out2"
    (out2 / ".partial" / "journal" / "EN").mkdir(parents=True)
    journal_path = out / ".partial" / "journal" / "EN" / "X.journal"
    (out2 / ".partial" / "journal" / "EN" / "X.journal").write_bytes(journal_path.read_bytes())
    with IsolationJournal.open(out2, inp, tar) as journal, TarWriter(out2, inp, tar) as writer:
        for i in range(4):
            journal.outcome(i, f"k{i}").apply(writer)
        writer.commit()
    second = (
        (out2 / "EN" / "X.jsonl").read_bytes(),
        (out2 / "errors" / "EN" / "X.jsonl").read_bytes(),
    )
    assert first == second


def test_remove_deletes_the_journal(dirs) -> None:
    journal = open_journal(dirs)
    journal.begin(0, "k0")
    journal.remove()
    assert not journal.path.exists()
    with pytest.raises(RuntimeError, match="closed"):
        journal.begin(1, "k1")


def test_a_killed_process_leaves_its_poison_sample_journalled(dirs) -> None:
    inp, out, tar = dirs
    # A real process that dies hard (no cleanup, no flush) inside sample 3.
    script = textwrap.dedent(
        f"""
        import os
        from tartok_tui.output.journal import IsolationJournal
        from tartok_tui.output.writer import make_record
        journal = IsolationJournal.open({str(out)!r}, {str(inp)!r}, {str(tar)!r})
        for i in range(10):
            if (entry := journal.outcome(i, f"k{{i}}")) is not None:
                continue
            journal.begin(i, f"k{{i}}")
            if i == 3:
                os._exit(9)
            journal.done(i, make_record(f"k{{i}}", {{}}, [i], [i]))
        journal.remove()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == 9
    with open_journal(dirs) as journal:
        assert sorted(journal.completed) == [0, 1, 2] and journal.crashed == {3: "k3"}
        assert journal.outcome(3, "k3").stage == CRASH_STAGE
        for i in range(4, 10):
            assert journal.outcome(i, f"k{i}") is None

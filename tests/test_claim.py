"""The claim on an output's tars: one live holder per range of tars, on a local directory and
on S3 (moto on 127.0.0.1); races between runs, gone holders, forced takeovers, and what
status and verify make of a claim."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from s3_support import FAST_FAIL, PATIENT, S3Server, ensure_buckets

from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.output.claim import (
    ClaimLost,
    ClaimRefused,
    Holder,
    OutputClaim,
    Selection,
    claim_store,
    read_claims,
)
from tartok_tui.output.claim_files import ClaimStore, LocalClaims
from tartok_tui.output.claim_objects import ObjectClaims
from tartok_tui.output.owner import Owner, process_started, this_machine
from tartok_tui.output.scan import scan_output
from tartok_tui.output.verify import verify
from tartok_tui.storage import Access

TARS = Selection(input="/data/in", recursive=False, first=0, end=10)
BUCKET = "tartok-claims"


def foreign(
    selection: Selection = TARS,
    *,
    heartbeat_age: float = 0.0,
    host: str = "elsewhere",
    machine: str = "elsewhere/boot/pid:[1]",
    pid: int = 4242,
    pid_started: float | None = 1.0,
) -> Holder:
    """The claim another run wrote: by default a live run on another machine."""
    now = time.time()
    owner = Owner(host, machine, pid, pid_started)
    return Holder("otherrun0001", owner, selection, now - 3600, now - heartbeat_age)


def plant(store: ClaimStore, holder: Holder) -> None:
    assert store.create(holder.selection.name, holder.encode()) is not None


def holder_now(store: ClaimStore, selection: Selection = TARS) -> Holder:
    found = store.read(selection.name)
    assert found is not None
    return Holder.decode(found.data)


@pytest.fixture
def local(tmp_path: Path) -> LocalClaims:
    return LocalClaims(tmp_path / "out")


# ---------------------------------------------------------------- refusing and sharing


def test_a_second_run_over_the_same_tars_is_refused_naming_the_holder(local: LocalClaims) -> None:
    first = OutputClaim.acquire(local, TARS)
    with pytest.raises(ClaimRefused) as refused:
        OutputClaim.acquire(local, TARS)
    message = str(refused.value)
    assert f"host {first.me.owner.host} (pid {os.getpid()})" in message
    assert "last heartbeat 0 s ago" in message and "--take-over" in message
    assert first.release() is None
    assert local.names() == []
    OutputClaim.acquire(local, TARS).release()  # released: free for the next run


def test_overlapping_ranges_are_refused_and_disjoint_ranges_share_the_output(
    local: LocalClaims,
) -> None:
    first = OutputClaim.acquire(local, TARS)
    for overlapping in (
        Selection("/data/in", False, 5, 20),
        Selection("/data/in", False, 0, 1),
        Selection("/data/in", True, 50, 60),  # another listing: indices say nothing
    ):
        with pytest.raises(ClaimRefused, match="another run is writing these tars"):
            OutputClaim.acquire(local, overlapping)
    beside = OutputClaim.acquire(local, Selection("/data/in", False, 10, 20))
    other_input = OutputClaim.acquire(local, Selection("/data/other", False, 0, 10))
    assert len(local.names()) == 3
    for claim in (first, beside, other_input):
        assert claim.release() is None
    assert local.names() == []


def test_a_claim_that_failed_on_an_overlap_leaves_nothing_behind(local: LocalClaims) -> None:
    plant(local, foreign(Selection("/data/in", False, 8, 12)))
    with pytest.raises(ClaimRefused, match="host elsewhere"):
        OutputClaim.acquire(local, TARS)
    assert local.names() == [Selection("/data/in", False, 8, 12).name]


# ---------------------------------------------------------------- gone holders


def test_a_claim_whose_process_ended_on_this_machine_is_taken_over(local: LocalClaims) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    started = process_started(child.pid)
    plant(local, foreign(host="here", machine=this_machine(), pid=child.pid, pid_started=started))
    with pytest.raises(ClaimRefused, match=f"pid {child.pid}"):
        OutputClaim.acquire(local, TARS)  # alive: refused
    child.kill()
    child.wait()
    claim = OutputClaim.acquire(local, TARS)
    assert len(claim.notes) == 1
    assert f"its process (pid {child.pid} on this machine) has ended" in claim.notes[0]
    assert holder_now(local).run_id == claim.me.run_id


def test_a_reused_pid_is_not_the_holder(local: LocalClaims) -> None:
    """A live process with the holder's pid but another start time is not the holder."""
    me = os.getpid()
    started = process_started(me)
    assert started is not None
    plant(local, foreign(machine=this_machine(), pid=me, pid_started=started - 1000))
    claim = OutputClaim.acquire(local, TARS)
    assert f"pid {me} on this machine) has ended" in claim.notes[0]


def test_a_pid_on_another_machine_is_never_looked_up_here(local: LocalClaims) -> None:
    # No process 4242 need exist here: another machine's pid says nothing about this one.
    plant(local, foreign(pid=2**22 + 17))
    with pytest.raises(ClaimRefused, match="host elsewhere"):
        OutputClaim.acquire(local, TARS)


def test_a_stale_heartbeat_is_taken_over_and_a_fresh_one_is_not(local: LocalClaims) -> None:
    plant(local, foreign(heartbeat_age=local.stale_after_s - 30))
    with pytest.raises(ClaimRefused, match="last heartbeat 270 s ago"):
        OutputClaim.acquire(local, TARS)
    found = local.read(TARS.name)
    assert found is not None
    stale = foreign(heartbeat_age=local.stale_after_s + 30)
    assert local.replace(TARS.name, stale.encode(), found.token) is not None
    claim = OutputClaim.acquire(local, TARS)
    assert "its last heartbeat is 330 s old (stale after 300 s)" in claim.notes[0]


def test_an_unreadable_claim_is_waited_for_briefly_then_taken_over(local: LocalClaims) -> None:
    local.root.mkdir(parents=True)
    path = local.root / TARS.name
    path.write_bytes(b"")  # created, not yet written
    writer = threading.Timer(0.5, lambda: path.write_bytes(foreign().encode()))
    writer.start()
    with pytest.raises(ClaimRefused, match="host elsewhere"):
        OutputClaim.acquire(local, TARS)
    writer.join()
    path.write_bytes(b"{garbage")
    old = time.time() - 60
    os.utime(path, (old, old))
    claim = OutputClaim.acquire(local, TARS)
    assert "unreadable" in claim.notes[0]


def test_a_swap_marker_left_by_a_killed_writer_does_not_block_a_takeover(
    local: LocalClaims,
) -> None:
    plant(local, foreign(heartbeat_age=3600))
    found = local.read(TARS.name)
    assert found is not None
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = Owner("here", this_machine(), child.pid, 1.0).to_dict()
    # The writer died between winning the marker and swapping the claim.
    (local.root / f"{TARS.name}.cas-{found.token}-0").write_text(json.dumps(dead))
    claim = OutputClaim.acquire(local, TARS)
    assert holder_now(local).run_id == claim.me.run_id
    assert sorted(p.name for p in local.root.iterdir()) == [TARS.name]


# ---------------------------------------------------------------- taking over and losing


def test_take_over_forces_and_the_old_holder_loses_at_its_heartbeat(local: LocalClaims) -> None:
    old = OutputClaim.acquire(local, TARS)
    old.heartbeat()
    new = OutputClaim.acquire(local, TARS, take_over=True)
    assert "forced by --take-over" in new.notes[0]
    with pytest.raises(ClaimLost, match=f"run {new.me.run_id}"):
        old.heartbeat()
    assert old.release() is None  # lost: nothing of ours to remove
    assert holder_now(local).run_id == new.me.run_id
    new.heartbeat()
    assert new.release() is None and local.names() == []


def test_take_over_of_an_overlapping_range_removes_that_run_s_claim(local: LocalClaims) -> None:
    wide = OutputClaim.acquire(local, Selection("/data/in", False, 0, 100))
    narrow = OutputClaim.acquire(local, TARS, take_over=True)
    assert "forced by --take-over" in narrow.notes[0]
    with pytest.raises(ClaimLost, match="removed by another run"):
        wide.heartbeat()
    assert local.names() == [TARS.name]
    narrow.release()


def test_a_holder_that_cannot_refresh_for_longer_than_stale_gives_up(
    local: LocalClaims, monkeypatch: pytest.MonkeyPatch
) -> None:
    claim = OutputClaim.acquire(local, TARS)

    def unreachable(name: str, data: bytes, token: str) -> str | None:
        raise OSError("the file server is not answering")

    monkeypatch.setattr(local, "replace", unreachable)
    with pytest.raises(OSError, match="not answering"):
        claim.heartbeat()  # not lost yet: tried again later
    monkeypatch.setattr(local, "stale_after_s", 0.0)
    with pytest.raises(ClaimLost, match="could not be refreshed"):
        claim.heartbeat()


# ---------------------------------------------------------------- races


def _race(acquire: Callable[[], OutputClaim], racers: int) -> tuple[list[OutputClaim], int]:
    """``racers`` threads call ``acquire`` at once: the claims won and the refusals."""
    start = threading.Barrier(racers)
    won: list[OutputClaim] = []
    refused: list[ClaimRefused] = []

    def run() -> None:
        start.wait()
        try:
            won.append(acquire())
        except ClaimRefused as exc:
            refused.append(exc)

    threads = [threading.Thread(target=run) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return won, len(refused)


@pytest.mark.parametrize("gone", [False, True], ids=["free", "gone holder"])
def test_of_runs_claiming_at_once_exactly_one_wins(local: LocalClaims, gone: bool) -> None:
    for _ in range(15):
        if gone:
            plant(local, foreign(heartbeat_age=3600))
        won, refused = _race(lambda: OutputClaim.acquire(local, TARS), racers=8)
        assert len(won) == 1 and refused == 7
        assert holder_now(local).run_id == won[0].me.run_id
        won[0].release()
        assert local.names() == []


def test_of_runs_forcing_a_takeover_at_once_the_last_swap_stands_and_the_others_lose(
    local: LocalClaims,
) -> None:
    first = OutputClaim.acquire(local, TARS)
    won, refused = _race(lambda: OutputClaim.acquire(local, TARS, take_over=True), racers=6)
    assert refused == 0 and len(won) == 6  # each forced in turn; only the last still holds
    holder = holder_now(local).run_id
    alive = []
    for claim in [first, *won]:
        try:
            claim.heartbeat()
            alive.append(claim.me.run_id)
        except ClaimLost:
            pass
    assert alive == [holder]


def _acquire_in_process(root: str, start: float, results: Any, done: Any) -> None:
    time.sleep(max(0.0, start - time.time()))
    try:
        claim = OutputClaim.acquire(LocalClaims(Path(root)), TARS)
    except ClaimRefused:
        results.put("refused")
        return
    results.put("won")
    done.wait(120)  # hold it until every racer has had its go
    claim.release()


def test_of_processes_taking_over_a_gone_claim_at_once_exactly_one_wins(tmp_path: Path) -> None:
    store = LocalClaims(tmp_path / "out")
    plant(store, foreign(heartbeat_age=3600))
    context = multiprocessing.get_context("spawn")
    results, done = context.Queue(), context.Event()
    start = time.time() + 8  # after every interpreter has started
    root = str(store.root.parent)
    procs = [
        context.Process(target=_acquire_in_process, args=(root, start, results, done))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=120) for _ in procs)
    done.set()
    for p in procs:
        p.join(60)
    assert outcomes == ["refused", "refused", "refused", "won"]
    assert store.names() == []


# ---------------------------------------------------------------- status and verify


def test_status_shows_the_holder_and_neither_status_nor_verify_counts_the_claim(
    tmp_path: Path,
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    write_emilia_tar(inp / "EN-B000000.tar", 2, seed=0, min_s=0.5, max_s=0.6)
    selection = Selection(str(inp), False, 0, 1)
    claim = OutputClaim.acquire(claim_store(out), selection)
    status = scan_output(out)
    assert status.tars_done == 0 and status.partial == [] and status.orphan_errors == []
    [shown] = status.claims
    assert shown.holder is not None and shown.holder.run_id == claim.me.run_id
    assert shown.gone is None and "last heartbeat 0 s ago" in shown.describe()
    assert status.to_dict()["claims"][0]["pid"] == os.getpid()
    report = verify(inp, out)
    assert report.missing_tars == ["EN-B000000.tar"] and report.unknown_keys == 0
    claim.release()
    assert scan_output(out).claims == []


def test_status_says_when_a_claim_s_run_is_gone(local: LocalClaims) -> None:
    plant(local, foreign(heartbeat_age=3600))
    [shown] = read_claims(local.root.parent)
    assert shown.gone is not None and "gone: its last heartbeat is 3600 s old" in shown.describe()


# ---------------------------------------------------------------- S3


@pytest.fixture
def on_s3(s3: S3Server) -> ObjectClaims:
    if not s3.running:
        s3.start()
    ensure_buckets(BUCKET)
    prefix = f"s3://{BUCKET}/out-{time.monotonic_ns()}"
    return ObjectClaims(prefix, Access(options=FAST_FAIL, retry=PATIENT))


def test_on_s3_the_store_refuses_a_second_create_and_a_write_on_an_old_etag(
    on_s3: ObjectClaims,
) -> None:
    assert on_s3.atomic
    token = on_s3.create("x.json", b"one")
    assert token is not None
    assert on_s3.create("x.json", b"two") is None  # If-None-Match: *  -> 412
    newer = on_s3.replace("x.json", b"three", token)
    assert newer is not None and newer != token
    assert on_s3.replace("x.json", b"four", token) is None  # If-Match on a replaced ETag
    assert on_s3.delete("x.json", token) is False
    found = on_s3.read("x.json")
    assert found is not None and found.data == b"three" and found.token == newer
    assert on_s3.delete("x.json", newer) is True
    assert on_s3.read("x.json") is None


def test_on_s3_a_held_claim_refuses_a_gone_one_is_taken_over_and_release_removes_it(
    on_s3: ObjectClaims,
) -> None:
    plant(on_s3, foreign())
    with pytest.raises(ClaimRefused, match=r"host elsewhere \(pid 4242\)"):
        OutputClaim.acquire(on_s3, TARS)
    found = on_s3.read(TARS.name)
    assert found is not None
    assert on_s3.replace(TARS.name, foreign(heartbeat_age=3600).encode(), found.token)
    claim = OutputClaim.acquire(on_s3, TARS)
    assert "its last heartbeat is 3600 s old" in claim.notes[0]
    claim.heartbeat()
    thief = OutputClaim.acquire(on_s3, TARS, take_over=True)
    with pytest.raises(ClaimLost, match=thief.me.run_id):
        claim.heartbeat()
    assert thief.release() is None
    assert on_s3.names() == []


def test_on_s3_of_runs_taking_over_a_gone_claim_at_once_exactly_one_wins(
    on_s3: ObjectClaims,
) -> None:
    for _ in range(5):
        plant(on_s3, foreign(heartbeat_age=3600))
        won, refused = _race(lambda: OutputClaim.acquire(on_s3, TARS), racers=6)
        assert len(won) == 1 and refused == 5
        won[0].release()
        assert on_s3.names() == []

"""The tar queue's exactly-once rules, without processes (milliseconds each)."""

from __future__ import annotations

import random

import pytest

from tartok_tui.output.journal import JournalEntry
from tartok_tui.supervisor.queue import ReturnCause, TarQueue, TarStatus


def test_tars_are_leased_in_order_and_each_to_one_lease_at_a_time() -> None:
    q = TarQueue(["a", "b", "c"])
    grants = [q.lease() for _ in range(4)]
    assert [g.tar for g in grants[:3] if g] == ["a", "b", "c"]
    assert grants[3] is None
    assert len({g.lease_id for g in grants[:3] if g}) == 3
    assert q.counts()[TarStatus.LEASED] == 3 and q.work_remaining()


def test_tars_done_before_the_run_are_skipped_and_never_leased() -> None:
    q = TarQueue(["a", "b", "c"], done=["b"])
    assert [q.lease().tar, q.lease().tar, q.lease()] == ["a", "c", None]
    assert q.entry("b").status == TarStatus.SKIPPED


def test_a_returned_tar_goes_to_the_front_of_the_queue() -> None:
    q = TarQueue(["a", "b", "c"])
    first = q.lease()
    assert q.give_back(first.lease_id, ReturnCause.INTENDED).requeued
    assert q.lease().tar == "a"


def test_a_lease_ends_exactly_once() -> None:
    q = TarQueue(["a"])
    grant = q.lease()
    q.commit(grant.lease_id, samples=3)
    for end in (
        lambda: q.commit(grant.lease_id),
        lambda: q.fail(grant.lease_id, "x"),
        lambda: q.give_back(grant.lease_id, ReturnCause.CRASH),
    ):
        with pytest.raises(KeyError):
            end()
    assert q.entry("a").status == TarStatus.DONE and not q.work_remaining()


def test_crashes_isolate_a_tar_then_give_it_up() -> None:
    q = TarQueue(["a", "b"], poison_threshold=2, max_kills=4)
    kills = 0
    while True:
        grant = q.lease()
        assert grant.tar == "a"  # a crashed tar is retried before anything else
        assert grant.isolate == (kills >= 2)
        assert grant.newly_isolated == (kills == 2)
        back = q.give_back(grant.lease_id, ReturnCause.CRASH)
        kills += 1
        if not back.requeued:
            break
    assert kills == 4
    assert q.entry("a").status == TarStatus.FAILED
    assert "killed 4 workers" in (q.entry("a").reason or "")
    assert q.lease().tar == "b"


def test_stalls_count_against_the_tar_like_crashes() -> None:
    q = TarQueue(["a"], poison_threshold=1, max_kills=2)
    assert q.give_back(q.lease().lease_id, ReturnCause.STALL).requeued
    grant = q.lease()
    assert grant.isolate
    back = q.give_back(grant.lease_id, ReturnCause.STALL)
    assert not back.requeued and "stalled 2 workers" in (back.reason or "")


def test_intended_returns_do_not_blame_the_tar_and_an_isolated_tar_retries_its_sample() -> None:
    q = TarQueue(["a"], poison_threshold=1)
    q.give_back(q.lease().lease_id, ReturnCause.CRASH)
    isolated = q.lease()
    assert isolated.isolate and isolated.decided == ()
    for _ in range(20):
        assert q.sample_begun(isolated.lease_id, 0, "k0")
        assert q.give_back(isolated.lease_id, ReturnCause.INTENDED).blamed is None
        isolated = q.lease()
        assert isolated.decided == ()  # killed on purpose: its sample is not the poison
    assert q.entry("a").kills == 1
    q.sample_begun(isolated.lease_id, 0, "k0")
    back = q.give_back(isolated.lease_id, ReturnCause.CRASH)
    assert back.blamed == JournalEntry.crash(0, "k0")  # a real crash blames the sample
    assert q.lease().decided == (JournalEntry.crash(0, "k0"),)


def test_a_lost_node_never_counts_against_a_tar_however_often() -> None:
    q = TarQueue(["a", "b"], poison_threshold=1, max_kills=2)
    for _ in range(50):
        grant = q.lease()
        assert grant.tar == "a" and not grant.isolate  # first in line, never isolated
        back = q.give_back(grant.lease_id, ReturnCause.NODE_LOST)
        assert back.requeued and back.blamed is None
    entry = q.entry("a")
    assert (entry.kills, entry.node_losses, entry.isolated) == (0, 50, False)
    # A crash on a live node still counts: one isolates (threshold 1), two give up.
    q.give_back(q.lease().lease_id, ReturnCause.CRASH)
    isolated = q.lease()
    assert isolated.isolate and isolated.newly_isolated
    assert not q.give_back(isolated.lease_id, ReturnCause.CRASH).requeued
    assert q.entry("a").status == TarStatus.FAILED


def test_a_node_lost_mid_isolation_retries_the_sample_it_was_in() -> None:
    q = TarQueue(["a"], poison_threshold=1)
    q.give_back(q.lease().lease_id, ReturnCause.CRASH)
    for _ in range(5):
        isolated = q.lease()
        q.sample_begun(isolated.lease_id, 4, "k4")
        assert q.give_back(isolated.lease_id, ReturnCause.NODE_LOST).blamed is None
    assert q.lease().decided == () and q.entry("a").kills == 1


def test_the_isolation_journal_travels_with_every_lease_of_the_tar() -> None:
    q = TarQueue(["a", "b"], poison_threshold=2)
    for _ in range(2):
        q.give_back(q.lease().lease_id, ReturnCause.CRASH)
    first = q.lease()
    assert first.isolate and first.decided == ()
    done0 = JournalEntry(0, "k0", record={"key": "k0", "semantic_tokens": [1]})
    error1 = JournalEntry(1, "k1", stage="decode", reason="bad bytes")
    for outcome in (done0, error1):
        assert q.sample_begun(first.lease_id, outcome.index, outcome.key)
        assert q.sample_done(first.lease_id, outcome)
    q.sample_begun(first.lease_id, 2, "k2")
    back = q.give_back(first.lease_id, ReturnCause.STALL)  # a stall blames as a crash does
    assert back.requeued and back.blamed == JournalEntry.crash(2, "k2")
    second = q.lease()  # on any worker: the queue, not the worker, holds the journal
    assert second.tar == "a" and not second.newly_isolated
    assert second.decided == (done0, error1, JournalEntry.crash(2, "k2"))
    q.sample_begun(second.lease_id, 3, "k3")
    q.give_back(second.lease_id, ReturnCause.DEVICE)  # a lost device never blames
    third = q.lease()
    assert [e.index for e in third.decided] == [0, 1, 2]
    q.commit(third.lease_id)
    assert q.entry("a").decided == {}  # done: nothing left to carry
    # Isolation messages for a lease that is not isolated (or not active) change nothing.
    plain = q.lease()
    assert plain.tar == "b" and not plain.isolate
    assert not q.sample_begun(plain.lease_id, 0, "b0")
    assert not q.sample_done(plain.lease_id, JournalEntry.crash(0, "b0"))
    assert not q.sample_done(third.lease_id, JournalEntry.crash(9, "k9"))


def test_an_earlier_runs_journal_is_carried_once_the_tar_is_isolated_again() -> None:
    q = TarQueue(["a"], poison_threshold=1)
    earlier = {0: JournalEntry(0, "k0", record={"key": "k0"}), 1: JournalEntry.crash(1, "k1")}
    q.restore("a", earlier)
    streaming = q.lease()
    assert not streaming.isolate and streaming.decided == ()  # not isolated: read as usual
    q.give_back(streaming.lease_id, ReturnCause.CRASH)
    assert q.lease().decided == (earlier[0], earlier[1])


def test_unreadable_input_is_retried_a_few_times_then_failed() -> None:
    q = TarQueue(["a"], input_retries=3)
    outcomes = [q.give_back(q.lease().lease_id, ReturnCause.INPUT, "EIO") for _ in range(3)]
    assert [o.requeued for o in outcomes] == [True, True, False]
    assert q.entry("a").status == TarStatus.FAILED and q.entry("a").kills == 0
    assert q.entry("a").reason == "input unreadable 3 times; last: EIO"


def test_a_tar_committed_before_its_worker_died_is_done() -> None:
    q = TarQueue(["a"])
    grant = q.lease()
    q.committed_elsewhere(grant.lease_id)
    assert q.entry("a").status == TarStatus.DONE and not q.work_remaining()


def test_sample_totals_count_what_is_known_and_estimate_the_rest() -> None:
    q = TarQueue(["a", "b", "c", "d"], done=["d"])
    assert q.samples_expected() == (None, False)
    first = q.lease()
    q.set_expected(first.lease_id, 10)
    assert q.samples_expected() == (30, True)  # 10 counted + 2 tars estimated at 10
    q.commit(first.lease_id, samples=12)  # what the worker wrote wins over the count
    second = q.lease()
    q.set_expected(second.lease_id, 8)
    third = q.lease()
    q.set_expected(third.lease_id, 7)
    assert q.samples_expected() == (27, False)  # the skipped tar is not this run's work


def test_random_lease_histories_keep_every_tar_done_exactly_once() -> None:
    rng = random.Random(7)
    tars = [f"t{i}" for i in range(30)]
    q = TarQueue(tars, poison_threshold=2, max_kills=6)
    committed: list[str] = []
    active = []
    while q.work_remaining():
        if active and (rng.random() < 0.5 or q.pending == 0):
            grant = active.pop(rng.randrange(len(active)))
            roll = rng.random()
            if roll < 0.6:
                committed.append(q.commit(grant.lease_id))
            else:
                cause = rng.choice(list(ReturnCause))
                q.give_back(grant.lease_id, cause)
        else:
            grant = q.lease()
            if grant is not None:
                assert all(g.tar != grant.tar for g in active)  # never leased twice at once
                active.append(grant)
    counts = q.counts()
    assert len(committed) == len(set(committed)) == counts[TarStatus.DONE]
    assert counts[TarStatus.DONE] + counts[TarStatus.FAILED] == len(tars)


def test_a_lost_device_counts_against_the_tar_but_never_blames_a_sample() -> None:
    q = TarQueue(["a"], poison_threshold=1, max_kills=3)
    q.give_back(q.lease().lease_id, ReturnCause.DEVICE)
    isolated = q.lease()
    assert isolated.isolate and isolated.decided == ()
    q.sample_begun(isolated.lease_id, 0, "k0")
    back = q.give_back(isolated.lease_id, ReturnCause.DEVICE)
    assert back.requeued and back.blamed is None
    again = q.lease()
    assert again.decided == ()  # the sample the device died in is tried again, not blamed
    back = q.give_back(again.lease_id, ReturnCause.DEVICE)
    assert not back.requeued and "lost the device of 3 workers" in (back.reason or "")


def test_out_of_memory_is_retried_on_fresh_workers_then_failed_never_a_kill() -> None:
    q = TarQueue(["a", "b"], poison_threshold=1, oom_retries=3)
    outcomes = []
    for _ in range(3):
        grant = q.lease()
        assert grant.tar == "a" and not grant.isolate  # back at the front, never isolated
        outcomes.append(q.give_back(grant.lease_id, ReturnCause.OOM, "CUDA out of memory"))
    assert [o.requeued for o in outcomes] == [True, True, False]
    entry = q.entry("a")
    assert entry.status == TarStatus.FAILED and entry.kills == 0
    assert entry.reason is not None and entry.reason.startswith("out of device memory 3 times")
    assert entry.reason.endswith("; last: CUDA out of memory")
    assert q.lease().tar == "b"  # the others go on


def test_out_of_memory_in_an_isolated_tar_retries_its_sample_instead_of_blaming_it() -> None:
    q = TarQueue(["a"], poison_threshold=1)
    q.give_back(q.lease().lease_id, ReturnCause.CRASH)
    isolated = q.lease()
    assert isolated.isolate
    assert q.sample_begun(isolated.lease_id, 0, "k0")
    back = q.give_back(isolated.lease_id, ReturnCause.OOM)
    assert back.requeued and back.blamed is None
    again = q.lease()
    assert again.isolate and again.decided == () and again.kills == 1

"""Batched Hub commits: many tars in one atomic commit, a tar done only when its commit has
landed. The batcher and committer against a fake HfApi that records commits; then a real run
(real supervisor, real workers, the S3 test server standing in for the repository's storage)
whose first commit fails, redone exactly once."""

from __future__ import annotations

import asyncio
import errno
import subprocess
import sys
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import requests
from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.errors import HfHubHTTPError
from run_support import _config, _good_tars
from s3_support import FAST_FAIL, S3Server, ensure_buckets

from tartok_tui.output.hub_commit import (
    CommitBatch,
    HubCommitter,
    HubRepo,
    StagedTar,
    commits_in_batches,
)
from tartok_tui.output.read import read_keys
from tartok_tui.output.staging import STAGED_DIR, StagingTarget, staged_folder, sweep_staged
from tartok_tui.output.store import StoreOutput, StoreUnavailable
from tartok_tui.output.target import OutputUnavailable
from tartok_tui.output.writer import TarWriter, make_record
from tartok_tui.storage import Access, RetryPolicy, ThrottlePolicy
from tartok_tui.supervisor import commits
from tartok_tui.supervisor.supervisor import Supervisor

REPO = HubRepo("org/tokens", "dataset", None, "EN")
QUICK = Access(
    retry=RetryPolicy(tries=2, first_delay_s=0.01, max_delay_s=0.01),
    throttle=ThrottlePolicy(first_delay_s=0.01, max_delay_s=0.05, patience_s=5.0),
)


def hub_error(status: int, code: str = "") -> HfHubHTTPError:
    response = requests.Response()
    response.status_code = status
    if code:
        response.headers["X-Error-Code"] = code
    return HfHubHTTPError(f"{status} from the Hub", response=response)


class FakeHub:
    """Records each commit that lands: (message, paths added, paths deleted). ``failures``:
    what the next calls raise instead of landing."""

    def __init__(self, failures: list[BaseException] | None = None, store: Any = None) -> None:
        self.failures = list(failures or [])
        self.calls = 0
        self.landed: list[tuple[str, list[str], list[str]]] = []
        self.store = store

    def create_commit(
        self, repo_id: str, operations: Any, *, commit_message: str, **kw: Any
    ) -> None:
        self.calls += 1
        assert (repo_id, kw.get("repo_type")) == ("org/tokens", "dataset") or self.store
        if self.failures:
            raise self.failures.pop(0)
        ops = list(operations)
        adds = [op for op in ops if isinstance(op, CommitOperationAdd)]
        deletes = [op.path_in_repo for op in ops if isinstance(op, CommitOperationDelete)]
        for op in adds:
            assert Path(str(op.path_or_fileobj)).is_file()
            if self.store is not None:
                self.store.upload(Path(str(op.path_or_fileobj)), op.path_in_repo)
        for path in deletes:
            if self.store is not None:
                self.store.remove(path)
        self.landed.append((commit_message, [op.path_in_repo for op in adds], deletes))


class OutputHas:
    """The output's store, as far as a staging writer asks it: which keys exist."""

    def __init__(self, *keys: str) -> None:
        self.keys = {PurePosixPath(k) for k in keys}

    def exists(self, key: PurePosixPath) -> bool:
        return key in self.keys


def stage_tar(
    root: Path, inp: Path, name: str, lease_id: int, errors: bool, store: Any
) -> StagedTar:
    """A tar written by a real TarWriter through a StagingTarget, as a worker does."""
    tar = inp / name
    tar.write_bytes(b"")
    folder = root / STAGED_DIR / f"lease-{lease_id}"
    target = StagingTarget(store, root, folder)
    writer = TarWriter(root, inp, tar, lease_id=lease_id, target=target)
    writer.add(0, make_record("k0", {"text": "a"}, range(32), [1, 2, 3]))
    if errors:
        writer.add_error(1, "k1", "decode", "not audio")
    writer.commit()
    return StagedTar(lease_id, tar, folder, writer.paths.rel_tokens, 0.0)


def hf_store() -> StoreOutput:
    return StoreOutput("hf://datasets/org/tokens/EN", QUICK)


# -- the batch ------------------------------------------------------------------------------


def test_a_batch_is_due_when_full_when_old_or_when_nothing_else_is_left() -> None:
    batch = CommitBatch(max_tars=3, max_age_s=300.0)
    assert not batch.due(0.0, idle=True) and batch.wait_s(0.0) is None
    for i in range(2):
        batch.add(
            StagedTar(i, f"t{i}.tar", Path(f"/s/{i}"), PurePosixPath(f"t{i}.jsonl"), 10.0 + i)
        )
    assert not batch.due(100.0) and batch.wait_s(100.0) == pytest.approx(210.0)
    assert batch.due(310.0)  # the oldest waited max_age_s
    assert batch.due(100.0, idle=True)  # nothing else to do: no reason to wait
    batch.add(StagedTar(2, "t2.tar", Path("/s/2"), PurePosixPath("t2.jsonl"), 50.0))
    assert batch.due(50.0)  # full
    batch.add(StagedTar(3, "t3.tar", Path("/s/3"), PurePosixPath("t3.jsonl"), 60.0))
    assert [t.lease_id for t in batch.take()] == [0, 1, 2]  # the oldest, at most max_tars
    assert [t.lease_id for t in batch.tars] == [3] and len(batch) == 1


# -- one commit -----------------------------------------------------------------------------


def test_one_commit_carries_every_file_of_its_tars_and_the_deletions_first(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    # Tar B's errors object is on the Hub from an earlier attempt; this one has no errors.
    store = OutputHas("errors/B.jsonl")
    staged = [
        stage_tar(tmp_path, inp, "A.tar", 1, errors=True, store=store),
        stage_tar(tmp_path, inp, "B.tar", 2, errors=False, store=store),
    ]
    hub = FakeHub()
    HubCommitter(hf_store(), REPO, hub).commit(staged)
    assert hub.landed == [
        (
            "tartok-tui: 2 tars",
            ["EN/A.jsonl", "EN/errors/A.jsonl", "EN/B.jsonl"],
            ["EN/errors/B.jsonl"],
        )
    ]
    assert not list((tmp_path / ".partial").rglob("*.part"))  # staged, nothing partial left


def test_a_failed_commit_lands_nothing_and_a_throttled_one_waits_its_turn(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    staged = [
        stage_tar(tmp_path, inp, f"{n}.tar", i, True, OutputHas()) for i, n in enumerate("AB")
    ]
    throttled = FakeHub([hub_error(429), hub_error(429)])
    HubCommitter(hf_store(), REPO, throttled).commit(staged)
    assert throttled.calls == 3 and len(throttled.landed) == 1  # waited, then landed once
    down = FakeHub([ConnectionError("reset")] * 5)
    with pytest.raises(StoreUnavailable):
        HubCommitter(hf_store(), REPO, down).commit(staged)
    assert down.calls == 2 and down.landed == []  # nothing of it landed
    full = FakeHub([hub_error(507)])
    with pytest.raises(OutputUnavailable) as err:
        HubCommitter(hf_store(), REPO, full).commit(staged)
    assert err.value.errno == errno.ENOSPC and full.calls == 1 and full.landed == []


def test_a_tar_staged_where_this_machine_cannot_see_it_is_never_committed(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    staged = stage_tar(tmp_path, inp, "A.tar", 1, True, OutputHas())
    (staged.folder / "A.jsonl").unlink()  # as on a node whose spool is not the driver's
    hub = FakeHub()
    with pytest.raises(ValueError, match=r"holds no A\.jsonl"):
        HubCommitter(hf_store(), REPO, hub).commit([staged])
    assert hub.calls == 0


def test_staged_folders_of_a_dead_supervisor_are_swept_and_a_live_one_s_are_kept(
    tmp_path: Path,
) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    mine = staged_folder(tmp_path, 7)
    host = mine.name.rsplit("-", 2)[0]
    theirs = mine.with_name(f"{host}-{int(dead.stdout)}-3")
    elsewhere = mine.with_name("otherhost-1-3")
    for folder in (mine, theirs, elsewhere):
        (folder / "X.jsonl").parent.mkdir(parents=True)
        (folder / "X.jsonl").write_text("{}\n")
    assert sweep_staged(tmp_path) == [theirs]  # a new run: the dead supervisor's tars redone
    assert mine.exists() and elsewhere.exists()
    assert sweep_staged(tmp_path, own=True) == [mine]  # this run's end: never committed


def test_only_hub_outputs_commit_in_batches() -> None:
    assert commits_in_batches("hf://datasets/org/tokens/EN")
    for output in ("s3://b/tokens", "gs://b/tokens", Path("/data/tokens")):
        assert not commits_in_batches(output)


# -- a real run -----------------------------------------------------------------------------

BUCKET = "tartok-hub-stand-in"


@pytest.mark.timeout(600)
def test_a_run_commits_in_batches_and_redoes_the_tars_of_a_failed_commit_exactly_once(
    s3: S3Server, tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers stage (the lease says where), the supervisor commits: here into an S3
    prefix standing in for the repository, through a fake HfApi whose first commit fails."""
    if not s3.running:
        s3.start()
    ensure_buckets(BUCKET)
    inp = tmp_path / "in"
    good = _good_tars(inp, n_tars=5, n_samples=3)
    out = f"s3://{BUCKET}/batched"
    store = StoreOutput(out, Access(options=FAST_FAIL))
    hub = FakeHub([hub_error(404, "EntryNotFound")], store=store)
    monkeypatch.setattr(commits, "commits_in_batches", lambda output: True)
    monkeypatch.setattr(
        commits, "hub_output", lambda s: (HubRepo("org/x", "dataset", None, ""), hub)
    )
    events: list[str] = []
    config = _config(
        inp, out, model_dir, num_proc=2, storage_options=FAST_FAIL, hub_commit_tars=2,
        hub_commit_every_s=600.0, spool_dir=tmp_path / "spool",
    )  # fmt: skip
    summary = asyncio.run(
        asyncio.wait_for(Supervisor(config, on_event=lambda e: events.append(e.message)).run(), 400)
    )
    assert summary.exit_code == 0, events

    def tokens_files(adds: list[str]) -> list[str]:
        return [p for p in adds if not p.startswith(("errors/", "meta/"))]

    landed_tars = Counter(p for _, adds, _ in hub.landed for p in tokens_files(adds))
    assert sorted(landed_tars) == [f"EN-B{i:06d}.jsonl" for i in range(5)]
    assert max(landed_tars.values()) == 1  # each tar in exactly one landed commit
    assert all(len(tokens_files(adds)) <= 2 for _, adds, _ in hub.landed)
    for _, adds, _ in hub.landed:  # a tar's commit record lands in its tokens file's commit
        records = sorted(
            p.removeprefix("meta/").removesuffix(".json") for p in adds if p.startswith("meta/")
        )
        assert records == sorted(p.removesuffix(".jsonl") for p in tokens_files(adds))
    assert hub.calls == len(hub.landed) + 1 and len(hub.landed) <= 5
    assert sum("Hub commit failed, redone later" in e for e in events) >= 1
    keys: Counter[str] = Counter()
    for key in store.list_keys():
        if str(key).endswith(".jsonl") and not str(key).startswith("errors/"):
            keys.update(read_keys(store.url_of(key), Access(options=FAST_FAIL)).keys)
    assert set(keys) == set(good) and max(keys.values()) == 1
    assert not any((config.local_output_dir / STAGED_DIR).glob("*"))  # nothing left staged

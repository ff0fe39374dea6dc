"""Batched commits to a Hugging Face Hub output: many tars' files in one atomic commit.

The Hub makes every upload a commit and limits commits per repository (128 an hour on
the free tier) and API requests per 5 minutes; a large run that committed each tar (one
or two commits per tar) would meet those limits within the hour. So an ``hf://`` output
commits in batches, from one committer in the supervisor: a commit is due when
``--hub-commit-tars`` tars are staged (default 32) or the oldest has waited
``--hub-commit-every-s`` (default 300 s), or when nothing else is left to do.

Design figure: at most 12 commits an hour from the timer, plus one per 32 tars. A run
finishing 480 tars an hour (32 GPU workers at ~4 min a tar) makes about 15-27 commits an
hour, a fifth of the free tier's limit, whatever the number of workers. A commit carries
at most 2 files per tar (64 at the defaults), under the Hub's advice of fewer than 100.

Each commit is one ``HfApi.create_commit`` with every file of its tars (and the deletions
their workers staged): it lands whole or not at all, so a tar is done exactly when its
commit has landed. A throttled commit (429) waits under the throttling policy, a failed
one is retried like any call to the store (``StoreOutput.call``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from tartok_tui.output.staging import read_staged
from tartok_tui.output.store import StoreOutput
from tartok_tui.storage import Location, is_url, scheme


def commits_in_batches(output: Location) -> bool:
    """Whether tars of this output are committed in batches (an ``hf://`` output)."""
    return is_url(output) and scheme(str(output)) == "hf"


class HubApi(Protocol):
    """What the committer needs of ``huggingface_hub.HfApi``."""

    def create_commit(
        self,
        repo_id: str,
        operations: Iterable[Any],
        *,
        commit_message: str,
        repo_type: str | None = None,
        revision: str | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class HubRepo:
    """Where an ``hf://`` output lives: a repository, a revision, a folder in it."""

    repo_id: str
    repo_type: str
    revision: str | None
    folder: str
    """The output's path inside the repository ("" for its root)."""

    def path_in_repo(self, key: PurePosixPath | str) -> str:
        return f"{self.folder}/{key}" if self.folder else str(key)


def hub_output(store: StoreOutput) -> tuple[HubRepo, HubApi]:
    """The repository of an ``hf://`` output and an API client with the store's
    credentials (asks the Hub whether the repository exists)."""
    from huggingface_hub import HfApi

    resolved = store.call("resolving", "", lambda: store.fs.resolve_path(store.root))
    repo = HubRepo(
        resolved.repo_id,
        resolved.repo_type,
        resolved.revision,
        resolved.path_in_repo.strip("/"),
    )
    return repo, HfApi(endpoint=store.fs.endpoint, token=store.fs.token)


@dataclass(frozen=True)
class StagedTar:
    """A tar whose files wait in ``folder`` for a commit."""

    lease_id: int
    tar: Location
    folder: Path
    tokens: PurePosixPath
    """Its tokens file's key: the commit that carries it makes the tar done."""
    staged_at: float
    """Monotonic time it was staged."""
    done: Any = None
    """What the worker reported (counts for the queue once committed)."""


class CommitBatch:
    """Staged tars, oldest first, and when the next commit is due (pure: no I/O, no clock)."""

    def __init__(self, max_tars: int, max_age_s: float) -> None:
        if max_tars < 1 or max_age_s <= 0:
            raise ValueError("a batch needs at least one tar and a positive age")
        self.max_tars = max_tars
        self.max_age_s = max_age_s
        self._tars: list[StagedTar] = []

    def __len__(self) -> int:
        return len(self._tars)

    @property
    def tars(self) -> tuple[StagedTar, ...]:
        return tuple(self._tars)

    def add(self, tar: StagedTar) -> None:
        self._tars.append(tar)

    def due(self, now: float, *, idle: bool = False) -> bool:
        """A commit is due: a full batch, an old enough one, or (``idle``) nothing else is
        being worked on, so waiting would only delay the end of the run."""
        if not self._tars:
            return False
        return len(self._tars) >= self.max_tars or idle or self.wait_s(now) == 0.0

    def wait_s(self, now: float) -> float | None:
        """Seconds until the oldest tar makes a commit due (None: nothing is staged)."""
        if not self._tars:
            return None
        return max(0.0, self._tars[0].staged_at + self.max_age_s - now)

    def take(self) -> list[StagedTar]:
        """The next commit's tars (the oldest, at most ``max_tars``), out of the batch."""
        taken, self._tars = self._tars[: self.max_tars], self._tars[self.max_tars :]
        return taken


class HubCommitter:
    """Commits staged tars to a Hub output, one atomic commit per call."""

    def __init__(self, store: StoreOutput, repo: HubRepo, api: HubApi) -> None:
        self.store = store
        self.repo = repo
        self.api = api

    def operations(self, tars: Sequence[StagedTar]) -> list[Any]:
        """Every file of every tar (deletions first), as ``create_commit`` takes them.

        ValueError when a tar's folder lacks its tokens file (staged on a machine whose
        spool this one does not see): committing it would mark the tar done without it."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        deletes: list[Any] = []
        adds: list[Any] = []
        for tar in tars:
            files = read_staged(tar.folder)
            if tar.tokens not in files.adds:
                raise ValueError(f"{tar.folder} holds no {tar.tokens}")
            deletes += [CommitOperationDelete(self.repo.path_in_repo(k)) for k in files.deletes]
            adds += [
                CommitOperationAdd(self.repo.path_in_repo(key), str(path))
                for key, path in files.adds.items()
            ]
        return deletes + adds

    def commit(self, tars: Sequence[StagedTar]) -> None:
        """One commit with all of ``tars``; retried while the store may mend (throttled,
        network). OutputUnavailable when the store refuses it (full, quota, access),
        StoreUnavailable when it could not be reached; either way nothing of it landed
        (or all of it: a caller that must know asks the store)."""
        operations = self.operations(tars)
        message = f"tartok-tui: {len(tars)} tars"
        self.store.call(
            "committing",
            "",
            lambda: self.api.create_commit(
                self.repo.repo_id,
                operations,
                commit_message=message,
                repo_type=self.repo.repo_type,
                revision=self.repo.revision,
            ),
        )

"""The supervisor through its launcher interface, with launchers that fail on purpose."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from tartok_tui import messages as m
from tartok_tui.config import RunConfig
from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.exit_codes import ExitCode
from tartok_tui.supervisor.process import LocalLauncher, WorkerSpec, WorkerStartError
from tartok_tui.supervisor.summary import RunSummary
from tartok_tui.supervisor.supervisor import Supervisor
from tartok_tui.supervisor.views import Event, WorkerState

pytestmark = pytest.mark.timeout(120)


class BrokenLauncher:
    """Fails every start with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.starts = 0
        self.closed = False

    def describe(self, spec: WorkerSpec) -> str:
        return "nowhere"

    def close(self) -> None:
        self.closed = True

    async def start(self, spec: WorkerSpec):
        self.starts += 1
        raise self.error


def _config(tmp_path: Path, model_dir: Path) -> RunConfig:
    write_emilia_tar(tmp_path / "in" / "EN-B000000.tar", 1, seed=0, min_s=0.5, max_s=0.6)
    return RunConfig(
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "out",
        model_dir=str(model_dir),
        device="cpu",
        num_proc=1,
    )


async def _run_broken(
    tmp_path: Path, model_dir: Path, error: BaseException
) -> tuple[Supervisor, BrokenLauncher, list[Event], RunSummary]:
    """A run whose launcher raises ``error`` at every start."""
    events: list[Event] = []
    launcher = BrokenLauncher(error)
    sup = Supervisor(_config(tmp_path, model_dir), on_event=events.append, launcher=launcher)
    summary = await asyncio.wait_for(sup.run(), 60)
    return sup, launcher, events, summary


async def test_a_worker_that_cannot_start_makes_its_slot_fatal_saying_why(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    sup, launcher, _, summary = await _run_broken(
        tmp_path, tiny_model_dir, WorkerStartError("cannot run on node n1: /data is missing")
    )
    assert summary.exit_code == ExitCode.ALL_FATAL
    assert "could not start the worker: cannot run on node n1" in summary.exit_reason
    assert "model load failed" not in summary.exit_reason
    assert sup.snapshot().workers[0].state == WorkerState.FATAL
    assert launcher.starts == 1
    assert launcher.closed  # the run's end releases what the launcher holds


async def test_a_bug_in_a_slot_ends_the_slot_loudly_not_silently(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    _, _, events, summary = await _run_broken(tmp_path, tiny_model_dir, KeyError("a bug"))
    assert summary.exit_code == ExitCode.ALL_FATAL
    assert any("supervisor error: KeyError" in e.message for e in events)
    assert summary.tars_unfinished == 1


class LeaseLostOnce:
    """Local workers, except that the first Lease never reaches its worker, which is then
    killed as unreachable (what a cluster worker's relay does when its node is out of reach)."""

    def __init__(self) -> None:
        self.local = LocalLauncher()
        self.lost: list[int] = []

    def describe(self, spec: WorkerSpec) -> str:
        return "local, a lease lost on the way"

    def close(self) -> None:
        self.local.close()

    async def start(self, spec: WorkerSpec):
        launcher = self
        process = await self.local.start(spec)
        send = process.send

        def send_or_lose(msg: m.Message) -> bool:
            if isinstance(msg, m.Lease) and not launcher.lost:
                launcher.lost.append(msg.lease_id)
                process.unreachable = "its requests could not be delivered after 4 tries"
                process.kill()
                return True
            return send(msg)

        process.send = send_or_lose  # type: ignore[method-assign]
        return process


async def test_an_unreachable_worker_is_restarted_and_its_tar_is_not_blamed(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    config = replace(_config(tmp_path, tiny_model_dir), poison_threshold=1, backoff_initial_s=0.1)
    events: list[Event] = []
    launcher = LeaseLostOnce()
    sup = Supervisor(config, on_event=events.append, launcher=launcher)
    summary = await asyncio.wait_for(sup.run(), 120)
    assert summary.exit_code == ExitCode.OK, summary.exit_reason
    assert launcher.lost == [1]
    messages = [e.message for e in events]
    assert any(
        "worker died (unreachable: its requests could not be delivered" in text
        and "restarting in" in text
        for text in messages
    ), messages
    # One blamed kill would have made the tar poison (threshold 1): it was not blamed.
    assert not any("sample by sample" in text for text in messages), messages
    assert summary.tars_done == 1 and sup.snapshot().workers[0].restarts == 1

"""The relay to a cluster worker when Ray's calls fail: a real worker subprocess and its
real host (``WorkerHost``), reached through an actor handle that fails on purpose.

No cluster: the handle calls the host in this process, as Ray would on the node, and
raises what Ray raises (``ActorUnavailableError``) or never answers.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import ray
from ray_support import wait_until, worker_processes

from tartok_tui import messages as m
from tartok_tui.config import RunConfig
from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.supervisor import ray_launcher
from tartok_tui.supervisor.ray_host import NodePlace, WorkerHost
from tartok_tui.supervisor.ray_launcher import LOST_EXIT, RayWorkerProcess
from tartok_tui.worker.options import WorkerOptions

pytestmark = pytest.mark.timeout(180)


class Call:
    """One method of the handle: ``remote`` submits the call at once, like Ray's."""

    def __init__(self, fn: Callable[..., Awaitable[Any]]) -> None:
        self._fn = fn
        self.calls = 0

    def remote(self, *args: Any) -> asyncio.Future[Any]:
        self.calls += 1
        return asyncio.ensure_future(self._fn(*args))


class Handle:
    """An actor handle over ``host``; ``send`` replaced where given."""

    def __init__(self, host: WorkerHost, send: Callable[..., Awaitable[Any]] | None = None):
        self.send = Call(send or host.send)
        self.pull = Call(host.pull)
        self.kill = Call(host.kill)
        self.memory = Call(host.memory)


class Launcher:
    """What a RayWorkerProcess asks of its launcher, recorded."""

    ray = ray

    def __init__(self) -> None:
        self.events: list[str] = []
        self.released = 0
        self.killed_actors = 0

    def report(self, level: str, slot: int | None, message: str) -> None:
        self.events.append(message)

    def release(self, slot: int, actor: Any, group: Any) -> None:
        self.released += 1

    def kill_actor(self, actor: Any) -> None:
        self.killed_actors += 1


def unavailable() -> ray.exceptions.ActorUnavailableError:
    return ray.exceptions.ActorUnavailableError("the node's connection was lost", None)


async def _start_host(tmp_path: Path, model_dir: Path) -> WorkerHost:
    write_emilia_tar(tmp_path / "in" / "EN-B000000.tar", 3, seed=0, min_s=0.5, max_s=0.8)
    config = RunConfig(input_dir=tmp_path / "in", output_dir=tmp_path / "out",
                       model_dir=str(model_dir), device="cpu")  # fmt: skip
    options = WorkerOptions.for_slot(config, slot=0, device="cpu", threads=1, model_dir=model_dir)
    host = WorkerHost(0, place=lambda: NodePlace("f00d" * 8, "testhost", ()))
    info = await host.start(options.to_json(), {}, str(tmp_path / "w.log"), None)
    assert "pid" in info, info
    return host


async def _until(stream, wanted: type[m.Message], seen: list[m.Message]) -> None:
    async for msg in stream:
        seen.append(msg)
        if isinstance(msg, wanted):
            return
    raise AssertionError(f"the worker ended before {wanted.__name__}: {seen}")


async def test_a_request_whose_answer_was_lost_is_sent_again_and_written_once(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    host = await _start_host(tmp_path, tiny_model_dir)
    failed: list[int] = []

    async def answer_lost_once(batch: bytes, seq: int) -> bool:
        delivered = await host.send(batch, seq)
        if not failed:
            failed.append(seq)  # it ran on the node, but the caller hears "unavailable"
            raise unavailable()
        return delivered

    handle = Handle(host, send=answer_lost_once)
    launcher = Launcher()
    process = RayWorkerProcess(launcher, 0, handle, None, 1, "testhost/f00df0")
    seen: list[m.Message] = []
    stream = process.messages(launcher.events.append)
    await asyncio.wait_for(_until(stream, m.Ready, seen), 120)
    tar = tmp_path / "in" / "EN-B000000.tar"
    assert process.send(m.Lease(1, str(tar)))
    await asyncio.wait_for(_until(stream, m.TarDone, seen), 120)
    assert process.send(m.Stop())
    async for msg in stream:
        seen.append(msg)
    assert await process.wait() == 0
    # The lease went twice (the first answer lost), the worker took it once.
    assert failed == [1] and handle.send.calls == 3
    assert sum(isinstance(msg, m.TarDone) for msg in seen) == 1
    assert process.unreachable is None and launcher.released == 1
    assert (tmp_path / "out" / "EN-B000000.jsonl").read_text().count("\n") == 3


async def test_a_worker_whose_requests_never_arrive_is_killed_as_unreachable(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ray_launcher, "SEND_RETRY_DELAYS_S", (0.05, 0.05, 0.05))
    host = await _start_host(tmp_path, tiny_model_dir)

    async def never_reached(batch: bytes, seq: int) -> bool:
        raise unavailable()

    handle = Handle(host, send=never_reached)
    launcher = Launcher()
    process = RayWorkerProcess(launcher, 0, handle, None, 1, "testhost/f00df0")
    seen: list[m.Message] = []
    stream = process.messages(launcher.events.append)
    await asyncio.wait_for(_until(stream, m.Ready, seen), 120)
    assert process.send(m.Lease(1, str(tmp_path / "in" / "EN-B000000.tar")))
    assert await asyncio.wait_for(process.wait(), 60) == -signal.SIGKILL
    assert handle.send.calls == 4 and handle.kill.calls == 1
    assert process.unreachable is not None
    assert "could not be delivered after 4 tries" in process.unreachable
    assert any(
        "worker on node testhost/f00df0 unreachable: killing it" in e for e in launcher.events
    )
    assert not any(isinstance(msg, m.TarStarted) for msg in seen)
    assert not process.send(m.Stop())
    wait_until(lambda: not worker_processes(tmp_path), 30, "the worker to be gone")


async def test_a_stop_to_a_host_that_never_answers_ends_the_worker_within_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A frozen host (or a partitioned node): no call ever returns, the kill included."""
    monkeypatch.setattr(ray_launcher, "SEND_TIMEOUT_S", 0.2)
    monkeypatch.setattr(ray_launcher, "SEND_RETRY_DELAYS_S", (0.05, 0.05, 0.05))
    monkeypatch.setattr(ray_launcher, "KILL_GRACE_S", 0.3)

    async def never(*args: Any) -> Any:
        await asyncio.Event().wait()

    host = WorkerHost(0, place=lambda: NodePlace("f00d" * 8, "testhost", ()))
    handle = Handle(host, send=never)
    handle.pull = Call(never)
    handle.kill = Call(never)
    launcher = Launcher()
    process = RayWorkerProcess(launcher, 0, handle, None, 1, "testhost/f00df0")
    reader = asyncio.ensure_future(process.wait())
    started = time.monotonic()
    assert process.send(m.Stop())
    # 4 tries of 0.2 s and 3 pauses, then the kill: 2 x 0.3 s without an answer.
    assert await asyncio.wait_for(reader, 10) == LOST_EXIT
    assert 1.2 <= time.monotonic() - started < 10
    assert handle.send.calls == 4 and handle.kill.calls == 1 and launcher.killed_actors == 1
    assert process.unreachable is not None and "no answer within 0.2 s" in process.unreachable
    assert any("did not answer the kill" in e for e in launcher.events)
    assert launcher.released == 1

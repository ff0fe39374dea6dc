"""Alive vs progressing, seen from outside a real worker process (`python -m tartok_tui.worker`).

The tests play the supervisor: they start the worker with its options, read its messages
from its stdout and send it a lease on its stdin.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tartok_tui import messages as m
from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.worker.options import WorkerOptions

pytestmark = pytest.mark.timeout(300)

WAIT_S = 120.0
"""Upper bound on any single wait: only a broken worker comes near it."""


def codec_reports_stage_progress(model_dir: Path) -> bool:
    """Whether the tokenizer calls its progress_hook during a model call."""
    from tartok_tui.codec.tokenizer import BiCodecTokenizer

    tokenizer = BiCodecTokenizer.load(model_dir, streams=1)
    calls: list[int] = []
    tokenizer.progress_hook = lambda: calls.append(1)
    clip = np.random.default_rng(0).uniform(-0.3, 0.3, 16000).astype(np.float32)
    try:
        tokenizer.tokenize_many([clip])
    finally:
        tokenizer.close()
    return bool(calls)


class Worker:
    """A worker subprocess and the messages it has sent, read by a thread."""

    def __init__(self, tmp_path: Path, model_dir: Path, faults: str) -> None:
        self.input_dir = tmp_path / "in"
        self.output_dir = tmp_path / "out"
        self.input_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = tmp_path / "worker.log"
        opts = WorkerOptions(
            slot=0, device="cpu", model_dir=model_dir, threads=1,
            output_dir=self.output_dir, input_dir=self.input_dir,
        )  # fmt: skip
        env = {**os.environ, "TARTOK_FAULT_INJECT": faults, "CUDA_VISIBLE_DEVICES": ""}
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tartok_tui.worker", "--options", opts.to_json()],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env,
            )  # fmt: skip
        self.messages: queue.Queue[m.Message | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.messages.put(m.decode(line))
        self.messages.put(None)

    def next(self) -> m.Message:
        msg = self.messages.get(timeout=WAIT_S)
        assert msg is not None, f"the worker exited:\n{self.stderr_path.read_text()}"
        return msg

    def until(self, done: Callable[[m.Message], bool]) -> list[m.Message]:
        """Messages up to and including the first for which `done` is true."""
        seen = []
        while True:
            msg = self.next()
            seen.append(msg)
            if done(msg):
                return seen

    def heartbeats(self, n: int) -> list[int]:
        """The counters of the next `n` heartbeats (other messages are skipped)."""
        return [self.until(_is(m.Heartbeat))[-1].progress for _ in range(n)]  # type: ignore[attr-defined]

    def send(self, msg: m.Message) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(m.encode(msg))
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)


@pytest.fixture
def start_worker(tmp_path: Path, tiny_model_dir: Path):
    started: list[Worker] = []

    def start(faults: str) -> Worker:
        worker = Worker(tmp_path, tiny_model_dir, faults)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


def _is(kind: type) -> Callable[[m.Message], bool]:
    return lambda msg: isinstance(msg, kind)


def test_heartbeats_come_while_loading_and_idle_and_the_counter_stands_still_in_a_hung_call(
    start_worker,
) -> None:
    worker = start_worker("load_sleep_s=6,hang_after=3")
    assert isinstance(worker.next(), m.Hello)
    loading = worker.until(_is(m.Ready))
    assert sum(isinstance(x, m.Heartbeat) for x in loading) >= 2  # a 6 s load, one every 2 s
    idle = worker.heartbeats(2)
    assert idle[0] == idle[1]  # nothing to do, nothing counted

    tar = worker.input_dir / "EN-B000000.tar"
    write_emilia_tar(tar, 8, seed=0, audio_format="flac", min_s=1.0, max_s=2.0)
    worker.send(m.Lease(lease_id=1, tar_path=str(tar)))
    # After 3 samples the next model call never returns; wait for it to be stuck.
    while "injected hang" not in worker.stderr_path.read_text():
        assert worker.proc.poll() is None
        worker.heartbeats(1)
    # The reader and the decoders finish what they can; then the counter stops for good.
    last = worker.heartbeats(3)
    while len(set(last[-3:])) > 1:
        last += worker.heartbeats(1)
    assert last[-1] > idle[-1]  # the lease made progress before it hung
    assert worker.heartbeats(3) == [last[-1]] * 3
    assert worker.proc.poll() is None  # alive, not progressing


def test_the_counter_moves_during_a_long_batch(start_worker, tiny_model_dir: Path) -> None:
    if not codec_reports_stage_progress(tiny_model_dir):
        pytest.skip("the tokenizer does not report progress between model stages yet")
    # Each model stage takes 4 s more: a batch spans several heartbeats.
    worker = start_worker("slow_stage_ms=4000")
    worker.until(_is(m.Ready))
    base = worker.heartbeats(1)[0]
    tar = worker.input_dir / "EN-B000000.tar"
    write_emilia_tar(tar, 1, seed=0, audio_format="flac", min_s=1.0, max_s=2.0)
    worker.send(m.Lease(lease_id=1, tar_path=str(tar)))
    during = worker.until(lambda x: isinstance(x, m.Progress) and x.batches >= 1)
    counters = [x.progress for x in during if isinstance(x, m.Heartbeat)]
    # Reading and decoding the one sample count 2; anything above that came from inside
    # the batch, before it ended.
    assert max(counters, default=base) > base + 2, (base, counters)
    assert len(set(counters)) >= 2
    assert isinstance(worker.until(_is(m.TarDone))[-1], m.TarDone)

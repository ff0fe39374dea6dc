"""The worker's parts on their own: fault directives, lease bookkeeping, batches in flight,
and a whole lease on the GPU path with a simulated accelerator (real tar, real decode,
real writer)."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from tar_faults import write_truncated_tar

from tartok_tui import messages as m
from tartok_tui.audio import prepare_audio
from tartok_tui.codec.failures import classify
from tartok_tui.codec.tokenizer import BiCodecTokenizer, Tokens, token_count
from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.output.journal import JournalEntry
from tartok_tui.output.paths import tar_output_paths
from tartok_tui.output.writer import make_record
from tartok_tui.shards.reader import Sample
from tartok_tui.worker.batches import RunningBatches
from tartok_tui.worker.channel import Channel, Control
from tartok_tui.worker.faults import LOST_DEVICE_MESSAGE, Faults, lost_device_error
from tartok_tui.worker.heartbeat import ProgressCounter
from tartok_tui.worker.lease import Entry, LeaseState
from tartok_tui.worker.options import WorkerOptions
from tartok_tui.worker.pipeline import LeaseRunner, is_device_failure

# ---------------------------------------------------------------- fault directives


def test_every_fault_directive_parses_and_none_is_the_default() -> None:
    assert Faults.from_env({}) == Faults()
    assert Faults().model_call_hook() is None
    faults = Faults.from_env(
        {
            "TARTOK_FAULT_INJECT": "device_lost_after=10,hang_after=4,load_sleep_s=2.5,"
            "slow_stage_ms=30,model_error_tar=EN-B000001.tar,oom_tar=EN-B000002.tar"
        }
    )
    assert (faults.device_lost_after, faults.hang_after) == (10, 4)
    assert (faults.load_sleep_s, faults.slow_stage_ms) == (2.5, 30.0)
    assert faults.model_error_tar == "EN-B000001.tar"
    assert faults.oom_tar == "EN-B000002.tar"


def test_a_lost_device_raises_what_pytorch_raises_once_enough_samples_went_in() -> None:
    exc = lost_device_error()
    assert isinstance(exc, torch.AcceleratorError) and isinstance(exc, RuntimeError)
    assert str(exc) == LOST_DEVICE_MESSAGE and exc.error_code == 700  # type: ignore[attr-defined]
    assert is_device_failure(exc)
    hook = Faults(device_lost_after=3).model_call_hook()
    assert hook is not None
    hook(2)
    hook(1)  # 3 samples went in; the device is lost from the next call on
    for _ in range(2):
        with pytest.raises(torch.AcceleratorError):
            hook(1)


def test_injected_model_errors_hit_the_named_tar_only() -> None:
    faults = Faults(model_error_tar="EN-B000001.tar")
    hook = faults.model_call_hook()
    assert hook is not None
    faults.on_lease("/data/EN-B000000.tar")
    hook(4)
    faults.on_lease("/data/EN-B000001.tar")
    with pytest.raises(RuntimeError, match="injected model error") as raised:
        hook(4)
    assert not is_device_failure(raised.value)


def test_injected_out_of_memory_is_what_pytorch_raises_and_hits_the_named_tar_only() -> None:
    faults = Faults(oom_tar="EN-B000002.tar")
    hook = faults.model_call_hook()
    assert hook is not None
    faults.on_lease("/data/EN-B000001.tar")
    hook(4)
    faults.on_lease("/data/EN-B000002.tar")
    with pytest.raises(torch.OutOfMemoryError) as raised:
        hook(1)
    assert classify(raised.value, torch.device("cpu")).kind == "oom"
    assert not is_device_failure(raised.value)


def test_slow_stages_still_count_progress() -> None:
    counter = ProgressCounter()
    slow = Faults(slow_stage_ms=1).wrap_progress(counter.advance)
    slow()
    slow()
    assert counter.value == 2
    assert Faults().wrap_progress(counter.advance) == counter.advance


# ---------------------------------------------------------------- options and lease state


def test_a_gpu_worker_decodes_on_every_core_it_is_given_a_cpu_worker_on_a_few() -> None:
    def opts(device: str, threads: int, decode_workers: int = 0) -> WorkerOptions:
        return WorkerOptions(
            slot=0, device=device, model_dir=Path("m"), threads=threads,
            output_dir=Path("o"), input_dir=Path("i"), decode_workers=decode_workers,
        )  # fmt: skip

    assert opts("cuda:0", 8).resolved_decode_workers == 8
    assert opts("cuda:0", 1).resolved_decode_workers == 1
    assert opts("cpu", 16).resolved_decode_workers == 4
    assert opts("cpu", 2).resolved_decode_workers == 1
    assert opts("cuda:0", 8, decode_workers=3).resolved_decode_workers == 3


def test_the_commit_count_is_checked_only_when_scan_and_reader_both_saw_a_clean_end() -> None:
    state = LeaseState(m.Lease(1, "a.tar"))
    assert state.commit_count() is None  # not counted yet
    state.scan = (7, True)
    assert state.commit_count() is None  # the reader has not finished cleanly
    state.read_clean = True
    assert state.commit_count() == 7 and state.expected == 7
    state.scan = (5, False)  # damage: the two may stop at different samples
    assert state.commit_count() is None and state.expected == 5


@pytest.mark.parametrize(
    ("model_errors", "samples", "excessive"),
    [(3, 4, False), (4, 80, False), (5, 80, True), (4, 6, True), (100, 20000, False)],
)
def test_a_tar_fails_with_more_than_5_percent_and_more_than_3_model_errors(
    model_errors: int, samples: int, excessive: bool
) -> None:
    state = LeaseState(m.Lease(1, "a.tar"), model_errors=model_errors)
    assert state.model_errors_excessive(samples) is excessive
    assert not state.model_errors_excessive(None)


# ---------------------------------------------------------------- batches in flight


def _entry(i: int) -> Entry:
    return Entry(i, f"k{i}", Sample(i, f"k{i}", None, None, None), clip=[0.0] * 500)


def test_one_batch_waits_ahead_of_the_running_one_and_results_come_back_as_each_ends() -> None:
    futures: list[Future] = []
    ended: list[list[int]] = []

    def submit(clips: list) -> Future:
        futures.append(Future())
        return futures[-1]

    batches = RunningBatches(
        submit, streams=1, max_in_flight=2, before_submit=lambda entries: None,
        on_done=lambda entries, results, latency, busy: ended.append([e.index for e in entries]),
    )  # fmt: skip
    batches.submit([_entry(0)])
    assert not batches.idle() and batches.free()
    batches.submit([_entry(1), _entry(2)])
    assert not batches.free()
    # A third batch waits for a slot: it is submitted once the first batch ends.
    third = threading.Thread(target=batches.submit, args=([_entry(3)],))
    third.start()
    futures[0].set_result([Tokens([1], [2])])
    third.join(timeout=60)
    assert not third.is_alive() and ended == [[0]] and len(futures) == 3
    for future in futures[1:]:
        future.set_result([Tokens([1], [2])] * (2 if future is futures[1] else 1))
    batches.drain()
    assert ended == [[0], [1, 2], [3]] and batches.idle()


# ---------------------------------------------------------------- a lease on the GPU path


class SimulatedAccelerator:
    """The tokenizer as the pipeline sees it on a GPU: one stream, batches of several clips
    planned by the real planner; each batch takes `seconds_per_batch`. Tracks how many
    batches were queued or running at once."""

    def __init__(self, batch_seconds: float, seconds_per_batch: float) -> None:
        self.device = torch.device("cuda")
        self.sample_rate = 16000
        self.batch_seconds = batch_seconds
        self.streams = 1
        self.fault_hook = None
        self.progress_hook = None
        self.seconds_per_batch = seconds_per_batch
        self.outstanding = self.most_outstanding = 0
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()
        self._stream = ThreadPoolExecutor(1)

    def prepare(self, data: bytes, max_seconds: float | None = None):
        return prepare_audio(data, max_seconds=max_seconds)

    def plan_batches(self, lengths: list[int]) -> list[list[int]]:
        return BiCodecTokenizer.plan_batches(self, lengths)  # type: ignore[arg-type]

    def submit(self, clips: list) -> Future:
        with self._lock:
            self.outstanding += 1
            self.most_outstanding = max(self.most_outstanding, self.outstanding)
        self.batch_sizes.append(len(clips))
        return self._stream.submit(self._run, [len(c) for c in clips])

    def _run(self, lengths: list[int]) -> list[Tokens]:
        time.sleep(self.seconds_per_batch)
        with self._lock:
            self.outstanding -= 1
        return [Tokens([n % 4096] * 32, [7] * token_count(n)) for n in lengths]

    def cleanup(self) -> None:
        pass


def _run_lease(
    tmp_path: Path, tar: Path, device: SimulatedAccelerator, lease: m.Lease | None = None
) -> list[m.Message]:
    opts = WorkerOptions(
        slot=0, device="cuda:0", model_dir=tmp_path, threads=2, batch_seconds=device.batch_seconds,
        output_dir=tmp_path / "out", input_dir=tar.parent,
    )  # fmt: skip
    messages_path = tmp_path / "messages.jsonl"
    fd = os.open(messages_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        runner = LeaseRunner(device, opts, Control(), Channel(fd), Faults(), ProgressCounter())
        runner.run(lease or m.Lease(1, str(tar)))
        runner.pool.shutdown()
    finally:
        os.close(fd)
    return [m.decode(line) for line in messages_path.read_bytes().splitlines()]


def test_a_lease_on_the_gpu_path_writes_every_sample_once_in_order_one_batch_ahead(
    tmp_path: Path,
) -> None:
    tar = tmp_path / "in" / "EN-B000000.tar"
    samples = write_emilia_tar(
        tar, 40, seed=3, audio_format="flac", min_s=0.5, max_s=2.0, broken={5: "bad_json"}
    )
    device = SimulatedAccelerator(batch_seconds=6.0, seconds_per_batch=0.2)
    messages = _run_lease(tmp_path, tar, device)
    done = [x for x in messages if isinstance(x, m.TarDone)]
    assert len(done) == 1 and (done[0].samples, done[0].errors) == (40, 1), messages
    paths = tar_output_paths(tmp_path / "out", tar.parent, tar)
    keys = [json.loads(line)["key"] for line in paths.jsonl.read_text().splitlines()]
    assert keys == [s.key for s in samples if s.broken is None]
    # One batch queued behind the running one, never more; batches hold several clips.
    assert device.most_outstanding == 2
    assert max(device.batch_sizes) > 1


def test_a_damaged_tar_commits_with_its_tar_error_record_without_a_count_check(
    tmp_path: Path,
) -> None:
    whole = tmp_path / "src" / "EN-B000000.tar"
    write_emilia_tar(whole, 12, seed=4, audio_format="flac", min_s=0.5, max_s=1.0)
    tar = write_truncated_tar(whole, tmp_path / "in" / "EN-B000000.tar", whole.stat().st_size // 2)
    messages = _run_lease(tmp_path, tar, SimulatedAccelerator(6.0, 0.0))
    done = [x for x in messages if isinstance(x, m.TarDone)]
    assert len(done) == 1, messages
    errors = [x for x in messages if isinstance(x, m.SampleError)]
    assert [e.stage for e in errors] == ["tar"]


def test_a_reader_that_fails_for_any_other_reason_fails_the_lease_never_commits_it_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither damage nor an unreadable input: a tar error record would make the tar done
    with only the samples read so far."""
    tar = tmp_path / "in" / "EN-B000000.tar"
    write_emilia_tar(tar, 8, seed=5, audio_format="flac", min_s=0.5, max_s=1.0)
    real = LeaseRunner._samples

    def failing(self, tar_path, indexed=False):
        for n, item in enumerate(real(self, tar_path, indexed)):
            if n == 3:
                raise RuntimeError("a reader bug")
            yield item

    monkeypatch.setattr(LeaseRunner, "_samples", failing)
    messages = _run_lease(tmp_path, tar, SimulatedAccelerator(6.0, 0.0))
    assert not [x for x in messages if isinstance(x, (m.TarDone, m.SampleError))], messages
    [failed] = [x for x in messages if isinstance(x, m.TarFailed)]
    assert failed.kind == "tar" and "a reader bug" in failed.reason
    paths = tar_output_paths(tmp_path / "out", tar.parent, tar)
    assert not paths.jsonl.exists() and not paths.errors.exists()


def test_an_isolated_lease_writes_what_is_decided_as_it_is_and_reports_every_other_sample(
    tmp_path: Path,
) -> None:
    tar = tmp_path / "in" / "EN-B000000.tar"
    keys = [
        s.key for s in write_emilia_tar(tar, 5, seed=5, audio_format="flac", min_s=0.5, max_s=1.0)
    ]
    earlier = make_record(keys[0], {"text": "from an earlier lease"}, [1] * 32, [2, 3])
    decided = [JournalEntry(0, keys[0], record=earlier), JournalEntry.crash(1, keys[1])]
    lease = m.Lease(1, str(tar), isolate=True, decided=[e.to_line() for e in decided])
    messages = _run_lease(tmp_path, tar, SimulatedAccelerator(6.0, 0.0), lease)
    isolation = [x for x in messages if isinstance(x, (m.IsolationBegin, m.IsolationDone))]
    # The undecided samples only, each begun, then done with its record, in tar order.
    assert [(type(x).__name__, x.key) for x in isolation] == [
        (kind, key) for key in keys[2:] for kind in ("IsolationBegin", "IsolationDone")
    ]
    assert all(x.record is not None for x in isolation if isinstance(x, m.IsolationDone))
    assert len([x for x in messages if isinstance(x, m.TarDone)]) == 1, messages
    paths = tar_output_paths(tmp_path / "out", tar.parent, tar)
    lines = [json.loads(line) for line in paths.jsonl.read_text().splitlines()]
    assert lines[0] == earlier and [r["key"] for r in lines] == [keys[0], *keys[2:]]
    errors = [json.loads(line) for line in paths.errors.read_text().splitlines()]
    assert [(e["key"], e["stage"]) for e in errors] == [(keys[1], "worker_crash")]


def test_an_isolated_lease_whose_journal_names_other_samples_fails_the_tar(
    tmp_path: Path,
) -> None:
    tar = tmp_path / "in" / "EN-B000000.tar"
    write_emilia_tar(tar, 3, seed=6, audio_format="flac", min_s=0.5, max_s=1.0)
    lease = m.Lease(1, str(tar), isolate=True, decided=[JournalEntry.crash(1, "other").to_line()])
    messages = _run_lease(tmp_path, tar, SimulatedAccelerator(6.0, 0.0), lease)
    failed = [x for x in messages if isinstance(x, m.TarFailed)]
    assert len(failed) == 1 and failed[0].kind == "tar" and "the tar changed" in failed[0].reason
    assert not tar_output_paths(tmp_path / "out", tar.parent, tar).jsonl.exists()

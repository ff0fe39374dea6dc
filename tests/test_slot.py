"""A slot's phases, exit intents and stall rule; the memory watch; GPU readings from NVML."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_supervisor import RecordingControls

from tartok_tui import messages as m
from tartok_tui.supervisor.gpus import GpuMonitor
from tartok_tui.supervisor.memory import MemoryWatch, TreeMemory
from tartok_tui.supervisor.placement import Placement
from tartok_tui.supervisor.restart import RestartPolicy
from tartok_tui.supervisor.slot import LOAD_ALLOWANCE_S, ActiveLease, ExitIntent, Slot
from tartok_tui.supervisor.views import WorkerState

TIMEOUT = 60.0


class FakeProcess:
    pid = 4242
    node = "local"

    def __init__(self) -> None:
        self.sent: list[m.Message] = []
        self.killed = False

    def send(self, msg: m.Message) -> bool:
        self.sent.append(msg)
        return True

    def kill(self) -> None:
        self.killed = True


def _slot() -> Slot:
    placement = Placement(0, "cpu", "cpu", 1)
    return Slot(placement=placement, policy=RestartPolicy(1, 60, 300, 5))


def _ready_slot(now: float = 0.0) -> Slot:
    slot = _slot()
    slot.started(FakeProcess(), now)  # type: ignore[arg-type]
    slot.hello()
    slot.loaded()
    return slot


def _lease(started: float = 0.0) -> ActiveLease:
    return ActiveLease(1, Path("/in/a.tar"), False, started)


def test_a_worker_goes_starting_loading_idle_running_and_back() -> None:
    slot = _slot()
    slot.started(FakeProcess(), 0.0)  # type: ignore[arg-type]
    assert slot.phase == WorkerState.STARTING
    slot.hello()
    assert slot.phase == WorkerState.LOADING
    slot.loaded()
    assert slot.phase == WorkerState.IDLE and slot.can_take_lease()
    slot.leased(_lease())
    assert slot.phase == WorkerState.RUNNING and not slot.can_take_lease()
    assert slot.lease_ended() is not None
    assert slot.phase == WorkerState.IDLE


def test_paused_only_once_the_worker_acknowledges() -> None:
    slot = _ready_slot()
    slot.leased(_lease())
    slot.pause()
    assert slot.phase == WorkerState.PAUSING
    slot.worker_says("running", 1.0)  # a stale report changes nothing
    assert slot.phase == WorkerState.PAUSING
    slot.worker_says("paused", 2.0)
    assert slot.phase == WorkerState.PAUSED
    slot.resume(3.0)
    assert slot.phase == WorkerState.RUNNING and not slot.pause_wanted


def test_a_pause_wanted_while_loading_applies_once_loaded() -> None:
    slot = _slot()
    slot.started(FakeProcess(), 0.0)  # type: ignore[arg-type]
    slot.hello()
    slot.pause()
    assert slot.phase == WorkerState.LOADING
    slot.loaded()
    assert slot.phase == WorkerState.PAUSING and not slot.can_take_lease()


def test_exit_intents_decide_blame_and_the_strongest_wins() -> None:
    slot = _ready_slot()
    slot.expect_exit(ExitIntent.RECYCLE)
    assert slot.phase == WorkerState.STOPPING and not slot.can_take_lease()
    slot.expect_exit(ExitIntent.STOP)  # a gentler reason does not replace the first
    assert slot.intent == ExitIntent.RECYCLE
    slot.expect_exit(ExitIntent.KILL)
    assert slot.intent == ExitIntent.KILL
    slot.expect_exit(ExitIntent.STALL)
    assert slot.intent == ExitIntent.STALL and slot.phase == WorkerState.STALLED
    slot.expect_exit(ExitIntent.KILL)  # a stall is not turned into a user kill
    assert slot.intent == ExitIntent.STALL
    assert ExitIntent.STALL.blames_tar and ExitIntent.NONE.blames_tar
    assert not any(
        i.blames_tar
        for i in (ExitIntent.KILL, ExitIntent.RESTART, ExitIntent.STOP, ExitIntent.RECYCLE)
    )


def test_a_worker_with_a_lease_stalls_after_the_timeout_without_progress() -> None:
    slot = _ready_slot()
    slot.leased(_lease(started=100.0))
    assert slot.stalled_for(100.0 + TIMEOUT - 1, TIMEOUT) is None
    assert slot.stalled_for(100.0 + TIMEOUT + 1, TIMEOUT) == pytest.approx(TIMEOUT + 1)


def test_progress_resets_the_clock_and_a_heartbeat_counts_only_when_it_moves() -> None:
    slot = _ready_slot()
    slot.leased(_lease(started=0.0))
    slot.heard(m.Heartbeat(progress=5), 50.0)
    assert slot.stalled_for(109.0, TIMEOUT) is None  # moved at 50
    slot.heard(m.Heartbeat(progress=5), 100.0)  # alive, not progressing
    assert slot.last_message_at == 100.0 and slot.last_progress_at == 50.0
    assert slot.stalled_for(111.0, TIMEOUT) == pytest.approx(61.0)
    slot.heard(m.Progress(1, 3, 0, 1.0, 1, 0.5), 112.0)
    assert slot.stalled_for(171.0, TIMEOUT) is None


def test_waiting_out_a_throttled_store_is_not_a_stall_but_a_try_that_hangs_is() -> None:
    slot = _ready_slot()
    slot.leased(_lease(started=0.0))
    slot.heard(m.Heartbeat(5, "503 SlowDown reading s3://b/a.tar at byte 0", 40.0), 50.0)
    assert slot.throttled is not None and slot.throttle_retry_at == 90.0
    for t in range(52, 600, 2):  # minutes of throttled waits, the counter standing still
        slot.heard(m.Heartbeat(5, "503 SlowDown reading s3://b/a.tar at byte 0", 30.0), t)
    assert slot.stalled_for(600.0, TIMEOUT) is None
    # The try itself (retry_in_s None) is watched like any call: hung, it stalls.
    slot.heard(m.Heartbeat(5, "503 SlowDown reading s3://b/a.tar at byte 0", None), 600.0)
    assert slot.throttle_retry_at is None
    assert slot.stalled_for(600.0 + TIMEOUT + 2, TIMEOUT) is not None
    slot.heard(m.Heartbeat(6), 700.0)  # the store answers: the state is gone
    assert slot.throttled is None
    slot.exited()
    assert slot.throttled is None and slot.throttle_retry_at is None


def test_loading_gets_the_long_allowance_and_idle_or_paused_never_stall() -> None:
    slot = _slot()
    slot.started(FakeProcess(), 0.0)  # type: ignore[arg-type]
    slot.hello()
    assert slot.stalled_for(LOAD_ALLOWANCE_S - 1, TIMEOUT) is None
    assert slot.stalled_for(LOAD_ALLOWANCE_S + 1, TIMEOUT) is not None
    idle = _ready_slot()
    assert idle.stalled_for(10 * LOAD_ALLOWANCE_S, TIMEOUT) is None
    paused = _ready_slot()
    paused.leased(_lease())
    paused.pause()
    paused.worker_says("paused", 1.0)
    assert paused.stalled_for(10 * LOAD_ALLOWANCE_S, TIMEOUT) is None
    assert paused.progress_age(10 * LOAD_ALLOWANCE_S) is None
    paused.resume(5000.0)  # the time paused is not held against it
    assert paused.stalled_for(5000.0 + TIMEOUT - 1, TIMEOUT) is None


# ---------------------------------------------------------------- memory watch


class Worker:
    def __init__(self, n: int, rss: int, busy: bool = True) -> None:
        self.n = n
        self.rss = rss
        self.mem_bytes = 0
        self.busy = busy

    @property
    def recyclable(self) -> bool:
        return self.busy

    async def measure(self, pss: bool) -> TreeMemory | None:
        return TreeMemory(rss=self.rss, pss=self.rss // 2 if pss else None)


def test_the_memory_watch_cleans_up_then_recycles_the_biggest_through_the_controls() -> None:
    controls = RecordingControls()
    watch = MemoryWatch(limit_bytes=100, controls=controls)
    workers = [Worker(0, 150), Worker(1, 260), Worker(2, 400, busy=False)]

    asyncio.run(watch.check(workers, now=0.0))
    assert ("cleanup_all",) in controls.calls
    assert watch.total_bytes == (150 + 260 + 400) // 2  # PSS read: over the limit by RSS
    assert [w.mem_bytes for w in workers] == [150, 260, 400]  # shown: RSS
    controls.calls.clear()
    asyncio.run(watch.check(workers, now=1.0))
    assert ("recycle", 1) in controls.calls  # the biggest busy one; 2 is not recyclable
    controls.calls.clear()
    asyncio.run(watch.check(workers, now=2.0))
    assert controls.calls == []  # one recycle at a time


# ---------------------------------------------------------------- GPUs


class FakeNvml:
    def __init__(self) -> None:
        self.inited = False

    def nvmlInit(self) -> None:
        self.inited = True

    def nvmlShutdown(self) -> None:
        self.inited = False

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"idx{index}"

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        return f"uuid:{uuid}"

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return f"Fake H200 {handle}".encode()

    def nvmlDeviceGetUtilizationRates(self, handle: str):
        return SimpleNamespace(gpu=87, memory=40)

    def nvmlDeviceGetMemoryInfo(self, handle: str):
        return SimpleNamespace(used=30 * 2**30, total=141 * 2**30, free=111 * 2**30)

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        if handle == "idx3":
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return 612_500

    def nvmlDeviceGetTemperature(self, handle: str, sensor: int) -> int:
        return 64


def test_gpu_readings_follow_cuda_visible_devices_and_tolerate_missing_figures() -> None:
    nvml = FakeNvml()
    monitor = GpuMonitor(["cuda:0", "cuda:1", "cpu", "cuda:0"], visible=["3", "GPU-abc"], nvml=nvml)
    first, second = monitor.read()
    assert first.device == "cuda:0" and first.name == "Fake H200 idx3"
    assert first.power_w is None  # not supported on that GPU: unknown, not an error
    assert second.name == "Fake H200 uuid:GPU-abc" and second.power_w == pytest.approx(612.5)
    assert second.utilization_pct == 87 and second.memory_total_bytes == 141 * 2**30
    assert second.temperature_c == 64
    monitor.close()
    assert not nvml.inited


def test_no_nvml_means_no_gpu_figures() -> None:
    class Broken(FakeNvml):
        def nvmlInit(self) -> None:
            raise RuntimeError("NVML_ERROR_DRIVER_NOT_LOADED")

    assert GpuMonitor(["cuda:0"], nvml=Broken()).read() == ()
    assert GpuMonitor(["cpu"], nvml=FakeNvml()).read() == ()

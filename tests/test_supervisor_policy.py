"""Supervisor policies without subprocesses: placement, restart backoff, memory escalation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tartok_tui import messages as m
from tartok_tui.config import ConfigError, RunConfig
from tartok_tui.supervisor.memory import PSS_EVERY_S, MemoryGuard, needs_pss, tree_memory
from tartok_tui.supervisor.placement import plan_slots, select_gpus
from tartok_tui.supervisor.process import worker_spec
from tartok_tui.supervisor.restart import RestartPolicy
from tartok_tui.worker.faults import Faults
from tartok_tui.worker.gpu_share import SHARED_PART, cap_memory, memory_fraction
from tartok_tui.worker.options import WorkerOptions


def _config(**kw) -> RunConfig:
    return RunConfig(input_dir=Path("in"), output_dir=Path("out"), model_dir="model", **kw)


def test_gpu_of_slot_is_slot_div_procs_per_gpu_mod_gpus() -> None:
    slots = plan_slots(
        _config(num_proc=6, procs_per_gpu=2), n_visible_gpus=2, cores=16, parent_env={}
    )
    assert [s.device for s in slots] == ["cuda:0", "cuda:0", "cuda:1", "cuda:1", "cuda:0", "cuda:0"]
    assert all(s.worker_device == "cuda:0" for s in slots)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "0", "1", "1", "0", "0"]


def test_each_gpu_worker_knows_how_many_share_its_gpu_and_they_divide_its_memory() -> None:
    # 5 slots, 2 per GPU over 2 GPUs: the fifth wraps around to GPU 0, which then has 3.
    slots = plan_slots(
        _config(num_proc=5, procs_per_gpu=2), n_visible_gpus=2, cores=16, parent_env={}
    )
    assert [(s.device, s.gpu_sharers) for s in slots] == [
        *[("cuda:0", 3)] * 2,
        *[("cuda:1", 2)] * 2,
        ("cuda:0", 3),
    ]
    # What the worker is started with says so (through the options' JSON).
    options = worker_spec(_config(), slots[4], Path("model")).options
    assert WorkerOptions.from_json(options.to_json()).gpu_sharers == 3
    alone = plan_slots(_config(num_proc=1), n_visible_gpus=1, cores=4, parent_env={})
    assert alone[0].gpu_sharers == 1 and memory_fraction(1) is None  # alone: no cap
    assert memory_fraction(2) == pytest.approx(SHARED_PART / 2)
    assert memory_fraction(3) * 3 == pytest.approx(SHARED_PART) and SHARED_PART < 1.0
    cpu = plan_slots(_config(num_proc=3, device="cpu"), n_visible_gpus=0, cores=4, parent_env={})
    assert {s.gpu_sharers for s in cpu} == {1}
    # CUDA only: on the CPU nothing is capped, and torch.cuda is never touched.
    assert cap_memory("cpu", 4) is None


def test_default_slot_count_is_procs_per_gpu_per_gpu_or_one_on_cpu() -> None:
    assert len(plan_slots(_config(procs_per_gpu=3), n_visible_gpus=4, cores=8, parent_env={})) == 12
    cpu = plan_slots(_config(), n_visible_gpus=0, cores=8, parent_env={})
    assert [(s.device, s.threads) for s in cpu] == [("cpu", 8)]


def test_cpu_workers_share_the_cores_instead_of_oversubscribing() -> None:
    slots = plan_slots(_config(num_proc=3, device="cpu"), n_visible_gpus=2, cores=8, parent_env={})
    assert [(s.device, s.threads) for s in slots] == [("cpu", 2)] * 3
    assert all(
        s.env["OMP_NUM_THREADS"] == "2" and s.env["CUDA_VISIBLE_DEVICES"] == "" for s in slots
    )
    many = plan_slots(_config(num_proc=5, device="cpu"), n_visible_gpus=0, cores=2, parent_env={})
    assert {s.threads for s in many} == {1}


def test_device_list_picks_gpus_among_the_inherited_visible_ones() -> None:
    env = {"CUDA_VISIBLE_DEVICES": "4,5,6"}
    slots = plan_slots(
        _config(device="cuda:2,0", procs_per_gpu=1), n_visible_gpus=3, cores=4, parent_env=env
    )
    assert [(s.device, s.env["CUDA_VISIBLE_DEVICES"]) for s in slots] == [
        ("cuda:2", "6"),
        ("cuda:0", "4"),
    ]


@pytest.mark.parametrize("device", ["cuda:3", "cuda:x", "cuda:", "cuda:0,0", "tpu"])
def test_bad_device_options_are_config_errors(device: str) -> None:
    with pytest.raises(ConfigError):
        select_gpus(device, 2)


def test_cuda_without_a_gpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no GPU"):
        plan_slots(_config(device="cuda"), n_visible_gpus=0, cores=2, parent_env={})


class _FakeDriver:
    def __init__(self, init: int, count: int) -> None:
        self.init, self.count = init, count

    def cuInit(self, flags: int) -> int:
        return self.init

    def cuDeviceGetCount(self, out) -> int:
        out._obj.value = self.count
        return 0


@pytest.mark.parametrize(("init", "count", "expected"), [(0, 3, 3), (100, 0, 0), (0, 0, 0)])
def test_gpus_are_counted_with_the_cuda_driver(monkeypatch, init, count, expected) -> None:
    from tartok_tui.supervisor import placement

    tried: list[str] = []

    def cdll(name: str):
        tried.append(name)
        if name != "libcuda.so":
            raise OSError(f"{name}: cannot open shared object file")
        return _FakeDriver(init, count)

    monkeypatch.setattr(placement.ctypes, "CDLL", cdll)
    assert placement.visible_gpu_count() == expected
    assert tried == ["libcuda.so.1", "libcuda.so"]


def test_no_cuda_driver_means_no_gpu(monkeypatch) -> None:
    from tartok_tui.supervisor import placement

    def cdll(name: str):
        raise OSError(name)

    monkeypatch.setattr(placement.ctypes, "CDLL", cdll)
    assert placement.visible_gpu_count() == 0


def test_validating_and_placing_a_run_never_imports_torch(tmp_path: Path, tiny_model_dir) -> None:
    # The supervisor process runs no model: torch would cost it ~0.5 GB and seconds.
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "EN-B000000.tar").write_bytes(b"")
    code = f"""
import sys
from pathlib import Path
from tartok_tui.config import RunConfig
from tartok_tui.supervisor.preflight import validate
from tartok_tui.supervisor.supervisor import Supervisor
from tartok_tui.supervisor.placement import plan_slots, visible_gpu_count
cfg = RunConfig(input_dir=Path({str(tmp_path / "in")!r}), output_dir=Path({str(tmp_path / "out")!r}),
                model_dir={str(tiny_model_dir)!r}, device="auto")
validated = validate(cfg)
assert len(validated.tars) == 1 and validated.placements
visible_gpu_count()
Supervisor(cfg, tars=validated.tars)
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_backoff_doubles_until_capped_and_resets_after_progress() -> None:
    policy = RestartPolicy(initial_s=1.0, max_s=5.0, window_s=100.0, limit=10)
    delays = []
    for t in range(5):
        policy.record_failure(float(t))
        delays.append(policy.next_delay())
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    policy.record_success()
    policy.record_failure(6.0)
    assert policy.next_delay() == 1.0


def test_crash_loop_counts_failures_within_the_window_only() -> None:
    policy = RestartPolicy(initial_s=1.0, max_s=5.0, window_s=10.0, limit=3)
    policy.record_failure(0.0)
    policy.record_failure(1.0)
    assert not policy.crash_loop(1.0)
    policy.record_failure(20.0)  # the first two fell out of the window
    assert not policy.crash_loop(20.0)
    policy.record_failure(21.0)
    policy.record_failure(22.0)
    assert policy.crash_loop(22.0)


def test_memory_over_limit_cleans_up_first_then_recycles_the_biggest_once() -> None:
    guard = MemoryGuard(limit_bytes=100)
    assert guard.check({0: 40, 1: 50}) is None
    assert guard.check({0: 40, 1: 70}).kind == "cleanup"
    action = guard.check({0: 40, 1: 70})
    assert (action.kind, action.slot) == ("recycle", 1)
    assert guard.check({0: 40, 1: 70}) is None  # the recycle is still under way
    guard.recycle_finished()
    assert guard.check({0: 40, 1: 70}).kind == "cleanup"
    assert guard.check({0: 10, 1: 10}) is None


def test_memory_guard_recycles_only_a_worker_that_is_processing_a_tar() -> None:
    guard = MemoryGuard(limit_bytes=100)
    assert guard.check({0: 90, 1: 60}, recyclable=set()).kind == "cleanup"
    assert guard.check({0: 90, 1: 60}, recyclable=set()) is None  # both still loading
    action = guard.check({0: 90, 1: 60}, recyclable={1})
    assert (action.kind, action.slot) == ("recycle", 1)


def test_tree_memory_reads_this_process() -> None:
    mem = tree_memory(os.getpid())
    assert mem is not None and mem.rss > 10 * 2**20
    assert mem.used > 0
    cheap = tree_memory(os.getpid(), pss=False)
    assert cheap is not None and cheap.pss is None and cheap.used == cheap.rss > 10 * 2**20


def test_pss_is_read_only_over_the_limit_by_rss_or_to_refresh_the_total() -> None:
    gib = 2**30
    assert not needs_pss(90 * gib, 100 * gib, since_last_pss_s=1.0)
    assert needs_pss(101 * gib, 100 * gib, since_last_pss_s=1.0)
    assert needs_pss(1 * gib, 100 * gib, since_last_pss_s=PSS_EVERY_S)
    assert needs_pss(1 * gib, 100 * gib, since_last_pss_s=float("inf"))  # the first check


def test_fault_injection_is_off_unless_asked_for() -> None:
    assert Faults.from_env({}) == Faults()
    faults = Faults.from_env(
        {"TARTOK_FAULT_INJECT": "load_fail,kill_on_key=a,kill_on_key=b,slow_ms=5"}
    )
    assert faults.load_fail and faults.kill_keys == {"a", "b"} and faults.slow_ms == 5
    with pytest.raises(ValueError, match="unknown directive"):
        Faults.from_env({"TARTOK_FAULT_INJECT": "explode"})


def test_tar_failed_message_round_trips() -> None:
    msg = m.TarFailed(lease_id=3, tar_path="/x/a.tar", reason="disk full")
    assert m.decode(m.encode(msg)) == msg


def test_worker_stdout_carries_only_messages_even_when_libraries_print() -> None:
    script = (
        "import os\n"
        "from tartok_tui import messages as m\n"
        "from tartok_tui.worker.channel import Channel\n"
        "from tartok_tui.worker.process import redirect_stdout_to_stderr\n"
        "fd = redirect_stdout_to_stderr()\n"
        "print('a library talking')\n"
        "os.write(1, b'C code writing to fd 1\\n')\n"
        "Channel(fd).send(m.Hello(pid=1, device='cpu'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, check=True
    )
    assert [m.decode(line) for line in done.stdout.splitlines()] == [m.Hello(pid=1, device="cpu")]
    assert b"a library talking" in done.stderr and b"C code writing" in done.stderr

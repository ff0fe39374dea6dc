"""No silent CPU fallback: with --device auto, NVIDIA device nodes and a driver that does not
start are a configuration error naming the driver's error; a worker without CUDA says why."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from tartok_tui.codec import cuda_driver
from tartok_tui.config import ConfigError, RunConfig
from tartok_tui.supervisor import placement
from tartok_tui.supervisor.placement import DriverStatus, plan_slots

NODES = [Path("/dev/nvidiactl"), Path("/dev/nvidia0")]


def _config(device: str = "auto") -> RunConfig:
    return RunConfig(input_dir=Path("in"), output_dir=Path("out"), model_dir="m", device=device)


def _plan(device: str, status: DriverStatus, nodes: list[Path], env: dict | None = None):
    return plan_slots(
        _config(device),
        cores=4,
        parent_env=env or {},
        device_nodes=lambda: nodes,
        driver=lambda: status,
    )


def test_a_driver_that_fails_to_start_beside_nvidia_devices_is_a_config_error() -> None:
    status = DriverStatus(library=True, init_error=999, error_name="CUDA_ERROR_UNKNOWN")
    with pytest.raises(ConfigError) as err:
        _plan("auto", status, NODES)
    message = str(err.value)
    assert "cuInit error 999 CUDA_ERROR_UNKNOWN" in message
    assert "/dev/nvidiactl" in message and "nvidia-smi" in message
    assert ">= 580" in message and "--device cpu" in message
    with pytest.raises(ConfigError, match="cuInit error 999"):
        _plan("cuda", status, NODES)


def test_nvidia_devices_without_a_driver_library_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"no CUDA driver library \(libcuda.so.1\)"):
        _plan("auto", DriverStatus(library=False), NODES[:1])


def test_no_nvidia_devices_means_the_cpu_without_an_error() -> None:
    for status in (DriverStatus(library=False), DriverStatus(True, 100, "CUDA_ERROR_NO_DEVICE")):
        slots = _plan("auto", status, [])
        assert [s.device for s in slots] == ["cpu"]


def test_gpus_hidden_on_purpose_mean_the_cpu_and_a_wrong_list_is_named() -> None:
    no_device = DriverStatus(True, 100, "CUDA_ERROR_NO_DEVICE")
    for hidden in ("", "-1"):
        slots = _plan("auto", no_device, NODES, {"CUDA_VISIBLE_DEVICES": hidden})
        assert [s.device for s in slots] == ["cpu"]
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES='7' may name no GPU"):
        _plan("auto", no_device, NODES, {"CUDA_VISIBLE_DEVICES": "7"})


def test_device_cpu_never_asks_the_driver() -> None:
    def driver() -> DriverStatus:
        raise AssertionError("the driver was asked")

    slots = plan_slots(
        _config("cpu"), cores=2, parent_env={}, device_nodes=lambda: NODES, driver=driver
    )
    assert [s.device for s in slots] == ["cpu"]


def test_a_working_driver_places_workers_on_its_gpus() -> None:
    slots = _plan("auto", DriverStatus(True, 0, None, 2), NODES)
    assert {s.device for s in slots} == {"cuda:0", "cuda:1"}


class _FakeLib:
    def __init__(self, init: int = 0, count: int = 1, version: int = 12040) -> None:
        self.init, self.count, self.version = init, count, version

    def cuInit(self, flags: int) -> int:
        return self.init

    def cuDeviceGetCount(self, out) -> int:
        out._obj.value = self.count
        return 0

    def cuGetErrorName(self, code: int, out) -> int:
        out._obj.value = b"CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"
        return 0

    def cuDriverGetVersion(self, out) -> int:
        out._obj.value = self.version
        return 0


def test_the_driver_probe_reports_the_error_code_and_its_name(monkeypatch) -> None:
    monkeypatch.setattr(cuda_driver.ctypes, "CDLL", lambda name: _FakeLib(init=803))
    status = placement.probe_driver()
    assert status == DriverStatus(True, 803, "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", 0)
    monkeypatch.setattr(cuda_driver.ctypes, "CDLL", lambda name: _FakeLib(count=4))
    assert placement.probe_driver() == DriverStatus(True, 0, None, 4)


def test_device_nodes_are_found_by_name(tmp_path: Path) -> None:
    assert cuda_driver.nvidia_device_nodes(tmp_path) == []
    (tmp_path / "nvidia0").touch()
    assert cuda_driver.nvidia_device_nodes(tmp_path) == [tmp_path / "nvidia0"]


def test_a_worker_without_cuda_names_the_torch_cuda_version_and_the_driver(monkeypatch) -> None:
    reason = cuda_driver.cuda_unavailable_reason("13.0", _FakeLib(version=12040))
    assert "torch is built for CUDA 13.0" in reason
    assert "NVIDIA driver: supports CUDA 12.4" in reason and ">= 580" in reason

    def no_library(name: str) -> ctypes.CDLL:
        raise OSError(name)

    monkeypatch.setattr(cuda_driver.ctypes, "CDLL", no_library)
    assert "NVIDIA driver: no driver library" in cuda_driver.cuda_unavailable_reason("13.0")
    assert "CPU-only build" in cuda_driver.cuda_unavailable_reason(None)

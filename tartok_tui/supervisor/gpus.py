"""GPU utilisation, memory, power and temperature from NVML, for the views.

Read in the supervisor (it never imports torch): NVML is the driver's management
library, cheap to ask (microseconds per call). GPU ``cuda:K`` is the K-th GPU the
supervisor sees, so its NVML handle is found through ``CUDA_VISIBLE_DEVICES`` (an
index or a UUID) when that is set. Anything NVML cannot tell is None; without NVML
(no driver, no GPU) there is simply nothing to show.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from tartok_tui.supervisor.views import GpuView

log = logging.getLogger("tartok_tui.supervisor")


class Nvml(Protocol):
    """The part of ``pynvml`` used here (tests pass a fake)."""

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...


def _load_nvml() -> Nvml | None:
    try:
        import pynvml
    except ImportError:
        return None
    nvml: Nvml = pynvml
    return nvml


class GpuMonitor:
    """Reads the GPUs the workers use. ``devices``: "cuda:K" names; ``visible``: the
    supervisor's CUDA_VISIBLE_DEVICES entries (None: K is the NVML index)."""

    TEMPERATURE_GPU = 0
    """NVML_TEMPERATURE_GPU."""

    def __init__(
        self,
        devices: Sequence[str],
        visible: Sequence[str] | None = None,
        nvml: Nvml | None = None,
    ) -> None:
        self.devices = [d for d in dict.fromkeys(devices) if d.startswith("cuda:")]
        self._visible = list(visible) if visible else None
        self._nvml = nvml if nvml is not None else (_load_nvml() if self.devices else None)
        self._handles: dict[str, Any] = {}
        self._names: dict[str, str] = {}
        self._started = False
        self._failed = False

    def _start(self) -> bool:
        if self._started or self._failed:
            return self._started
        if self._nvml is None or not self.devices:
            self._failed = True
            return False
        try:
            self._nvml.nvmlInit()
            for device in self.devices:
                handle = self._handle(device)
                self._handles[device] = handle
                name = self._nvml.nvmlDeviceGetName(handle)
                self._names[device] = name.decode() if isinstance(name, bytes) else str(name)
        except Exception as exc:  # NVML raises its own error classes per failure
            log.warning("NVML unavailable, GPU figures not shown: %s", exc)
            self._failed = True
            return False
        self._started = True
        return True

    def _handle(self, device: str) -> Any:
        assert self._nvml is not None
        k = int(device.split(":", 1)[1])
        ident = self._visible[k] if self._visible and k < len(self._visible) else str(k)
        if ident.isdigit():
            return self._nvml.nvmlDeviceGetHandleByIndex(int(ident))
        return self._nvml.nvmlDeviceGetHandleByUUID(ident)

    def read(self) -> tuple[GpuView, ...]:
        """One reading per GPU; empty without NVML."""
        if not self._start():
            return ()
        return tuple(self._read_one(device) for device in self.devices)

    def _read_one(self, device: str) -> GpuView:
        nvml, handle = self._nvml, self._handles[device]
        assert nvml is not None

        def ask(call: Any, *args: Any) -> Any:
            try:
                return call(handle, *args)
            except Exception:  # a query this GPU does not support: shown as unknown
                return None

        util = ask(nvml.nvmlDeviceGetUtilizationRates)
        mem = ask(nvml.nvmlDeviceGetMemoryInfo)
        power_mw = ask(nvml.nvmlDeviceGetPowerUsage)
        temp = ask(nvml.nvmlDeviceGetTemperature, self.TEMPERATURE_GPU)
        return GpuView(
            device=device,
            name=self._names.get(device, ""),
            utilization_pct=float(util.gpu) if util is not None else None,
            memory_used_bytes=int(mem.used) if mem is not None else None,
            memory_total_bytes=int(mem.total) if mem is not None else None,
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            temperature_c=float(temp) if temp is not None else None,
        )

    def close(self) -> None:
        if self._started and self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception as exc:  # shutting down at the end of a run: report, go on
                log.warning("NVML shutdown failed: %s", exc)
        self._started = False

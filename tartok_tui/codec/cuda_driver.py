"""The NVIDIA driver asked directly through its library (ctypes, no torch).

The supervisor uses it to count GPUs and to tell a broken driver from a machine without
a GPU; a worker uses it to say why CUDA is unavailable. Importing torch for either would
cost the supervisor ~0.5 GB and seconds.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

CUDA_DRIVER_LIBS = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")
DEVICE_NODES = ("nvidiactl", "nvidia0")


def load_driver() -> ctypes.CDLL | None:
    """The CUDA driver library, or None when none can be loaded."""
    for name in CUDA_DRIVER_LIBS:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def nvidia_device_nodes(dev: Path = Path("/dev")) -> list[Path]:
    """The NVIDIA device nodes present: a GPU driver is installed on this machine (or
    passed into this container) when any is."""
    return [dev / name for name in DEVICE_NODES if os.path.exists(dev / name)]


def error_name(lib: object, code: int) -> str | None:
    """cuGetErrorName for `code` ("CUDA_ERROR_NO_DEVICE"), None if the driver cannot say."""
    name = ctypes.c_char_p()
    try:
        if lib.cuGetErrorName(code, ctypes.byref(name)) != 0 or not name.value:  # type: ignore[attr-defined]
            return None
    except (AttributeError, TypeError, ctypes.ArgumentError):
        return None
    return name.value.decode(errors="replace")


def driver_version(lib: object | None = None) -> str:
    """What the driver says of itself: "supports CUDA 12.4", or "no driver library"."""
    lib = lib if lib is not None else load_driver()
    if lib is None:
        return "no driver library"
    version = ctypes.c_int(0)
    try:
        if lib.cuDriverGetVersion(ctypes.byref(version)) != 0:  # type: ignore[attr-defined]
            return "version unknown (cuDriverGetVersion failed)"
    except (AttributeError, TypeError, ctypes.ArgumentError):
        return "version unknown (no cuDriverGetVersion)"
    return f"supports CUDA {version.value // 1000}.{version.value % 1000 // 10}"


def cuda_unavailable_reason(torch_cuda: str | None, lib: object | None = None) -> str:
    """Why a CUDA device cannot be used, for a torch built for CUDA `torch_cuda`."""
    if torch_cuda is None:
        return "this torch is a CPU-only build (torch.version.cuda is None)"
    return (
        f"CUDA is not available: torch is built for CUDA {torch_cuda}, NVIDIA driver: "
        f"{driver_version(lib)}. A CUDA 13 torch needs driver >= 580 (check nvidia-smi), "
        "or install the torch build for the driver's CUDA version"
    )

"""What a failed model call means: the clip's fault, memory, or a device that is gone.

    oom     out of memory (torch.OutOfMemoryError, a "... out of memory" error, cuBLAS
            failing to allocate): the batch is split and retried after memory is freed;
            a clip that does not fit alone raises ClipOutOfMemory, never recorded.
    device  the device can no longer be trusted: torch.AcceleratorError, or an error whose
            message says "CUDA error", "CUBLAS_STATUS_...", "CUDNN_STATUS_...", "device-side
            assert" or "illegal memory access", on any device (a CUDA context that saw one
            is dead for the process); and on a CUDA device every other error that is
            neither oom nor the clip's audio. Raised as DeviceFailure, never recorded.
    model   any other RuntimeError or ValueError on the CPU: recorded for the clip.

The markers are checked on any device because nothing but a GPU raises them, and fault
injection raises them on CPU workers to test the same path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch

from tartok_tui.audio import AudioError
from tartok_tui.stages import Stage

Kind = Literal["oom", "device", "model", "audio"]

_OOM = re.compile(r"out of memory|CUBLAS_STATUS_ALLOC_FAILED", re.IGNORECASE)
_STICKY = r"device-side assert|illegal memory access|illegal address|unspecified launch failure"
_STICKY_RE = re.compile(_STICKY, re.IGNORECASE)
_DEVICE_LOST = re.compile(
    r"CUDA error|CUDA driver error|CUBLAS_STATUS_|CUDNN_STATUS_|cuDNN error|" + _STICKY,
    re.IGNORECASE,
)
_ACCELERATOR_ERROR: type[BaseException] | None = getattr(torch, "AcceleratorError", None)

HANDLED = (RuntimeError, ValueError, AudioError)
"""Exception types a model call is expected to raise; others are bugs and propagate."""


@dataclass(frozen=True)
class Failure:
    """A failed model call reduced to what the retry logic needs: no traceback, so no
    reference to the failed batch's tensors."""

    kind: Kind
    stage: Stage | None
    """The stage a clip's error record gets; None for the kinds never recorded."""
    reason: str


def classify(exc: BaseException, device: torch.device) -> Failure:
    """The kind of a model call's failure on `device` (see the module docstring)."""
    if isinstance(exc, AudioError):
        return Failure("audio", Stage(exc.stage), exc.reason)
    message = str(exc)
    reason = f"{type(exc).__name__}: {message}"
    if isinstance(exc, torch.OutOfMemoryError):
        return Failure("oom", None, reason)
    if _OOM.search(message) and not _STICKY_RE.search(message):
        # "CUDA error: out of memory" is not sticky: the context survives it.
        return Failure("oom", None, reason)
    if is_accelerator_error(exc) or _DEVICE_LOST.search(message) or device.type != "cpu":
        return Failure("device", None, reason)  # raised as DeviceFailure
    return Failure("model", Stage.MODEL, reason)


def is_accelerator_error(exc: BaseException) -> bool:
    """torch.AcceleratorError (PyTorch's error for a failed device call), where it exists."""
    return _ACCELERATOR_ERROR is not None and isinstance(exc, _ACCELERATOR_ERROR)

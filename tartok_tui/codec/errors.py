"""Errors the codec raises instead of recording them per clip."""

from __future__ import annotations

from pathlib import Path


class DeviceFailure(RuntimeError):
    """The device can no longer be trusted (a lost CUDA context: illegal memory access,
    device-side assert, ECC/Xid, a failed cuBLAS call) or failed in a way that is not the
    clip's fault. Never recorded as a sample error: the worker gives its lease back
    uncommitted and exits non-zero, so that a fresh process (and context) takes over."""


class ClipOutOfMemory(RuntimeError):
    """A clip ran out of device memory even alone, after the failed batch's memory was
    freed. Not the clip's fault: what fits depends on the allocator's state and on who
    else holds the device (a second worker, a co-tenant). Never recorded: the worker
    gives its lease back uncommitted and exits, so that a fresh process with a clean
    allocator tries the tar again (the supervisor gives up on it after a few tries)."""


class ModelDirError(Exception):
    """The model dir is unusable; `file` and `key` say where."""

    def __init__(
        self, message: str, file: Path | str | None = None, key: str | None = None
    ) -> None:
        where = f"{file}" if file is not None else ""
        if key is not None:
            where += f" [{key}]"
        super().__init__(f"{where}: {message}" if where else message)
        self.file = str(file) if file is not None else None
        self.key = key
        self.message = message

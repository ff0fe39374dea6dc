"""Errors the codec raises instead of recording them per clip."""

from __future__ import annotations

from pathlib import Path


class DeviceFailure(RuntimeError):
    """The device can no longer be trusted (a lost CUDA context: illegal memory access,
    device-side assert, ECC/Xid, a failed cuBLAS call) or failed in a way that is not the
    clip's fault. Never recorded as a sample error: the worker gives its lease back
    uncommitted and exits non-zero, so that a fresh process (and context) takes over."""


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

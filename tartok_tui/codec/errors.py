"""Errors the tokenizer raises instead of recording them per clip."""

from __future__ import annotations


class DeviceFailure(RuntimeError):
    """The device can no longer be trusted (a lost CUDA context: illegal memory access,
    device-side assert, ECC/Xid, a failed cuBLAS call) or failed in a way that is not the
    clip's fault. Never recorded as a sample error: the worker gives its lease back
    uncommitted and exits non-zero, so that a fresh process (and context) takes over."""

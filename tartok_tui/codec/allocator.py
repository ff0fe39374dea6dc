"""Keep freed memory in the process, so the model's big buffers are reused, not refaulted.

glibc hands allocations above a threshold (at most 32 MiB) to mmap and returns them to the
kernel on free, and trims the heap's top beyond 128 KiB. The model allocates and frees
buffers of tens of MiB for every clip, so each clip pays for fresh zeroed pages again
(benchmarks/bench_runtime.py on 2 cores, 157 s of audio: 1.24 million page faults and
2.4 s of kernel time by default, 0.10 million and 0.2 s kept).
keep_freed_memory() makes glibc serve everything from one heap that it does not trim;
release_free_memory() gives the free part back when memory is wanted (the worker's memory
guard asks for it). Elsewhere than glibc both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_TRIM_THRESHOLD = 2**31 - 1  # an int; effectively "never trim on free"

_libc: ctypes.CDLL | None = None
_tried = False


def _glibc() -> ctypes.CDLL | None:
    global _libc, _tried
    if not _tried:
        _tried = True
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim"):
                    _libc = lib
            except OSError as exc:
                log.info("no libc to tune: %s", exc)
    return _libc


def keep_freed_memory() -> bool:
    """Serve allocations from one untrimmed heap; True when applied (glibc only).

    Call it early, before threads allocate: an arena a thread already has stays its own.
    """
    libc = _glibc()
    if libc is None:
        return False
    ok = all(
        libc.mallopt(option, value) == 1
        for option, value in (
            (_M_ARENA_MAX, 1),  # stream threads share the main heap instead of mmap'd arenas
            (_M_MMAP_MAX, 0),  # big buffers come from the heap and stay there when freed
            (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
        )
    )
    if not ok:
        log.warning("mallopt refused a setting; freed memory may go back to the kernel")
    return ok


def release_free_memory() -> bool:
    """Return the heap's free pages to the kernel (glibc only); True if any were."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))

"""Freed memory stays in the process once keep_freed_memory() is applied (glibc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Allocate, touch, free and allocate again a 64 MiB buffer; print the page faults of the
# second round. glibc's default maps such a buffer anew each time (~16k faults of 4 KiB).
# Transparent huge pages are turned off for the probe process: where the system has them
# "always", a fresh mapping faults in 2 MiB pages (32 faults) and the count says nothing.
PR_SET_THP_DISABLE = 41
PROBE = f"""
import ctypes, resource, sys
from tartok_tui.codec.allocator import keep_freed_memory, release_free_memory
thp_off = ctypes.CDLL(None, use_errno=True).prctl({PR_SET_THP_DISABLE}, 1, 0, 0, 0) == 0
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
def round_trip():
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_trip()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, thp_off)
if sys.argv[1] == "keep":
    assert release_free_memory()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_kept_memory_is_reused_without_page_faults() -> None:
    def faults(mode: str) -> tuple[int, bool]:
        out = subprocess.run(
            [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
        )
        count, thp_off = out.stdout.split()
        return int(count), thp_off == "True"

    default, thp_off = faults("default")
    kept, _ = faults("keep")
    if thp_off:
        assert default > 10_000  # 64 MiB of fresh 4 KiB pages
        assert kept < 1_000  # the same pages again
    else:  # a kernel without the prctl: huge pages may make the fresh mapping cheap
        assert kept * 8 <= default

"""A GPU shared by several workers: each caps its own memory at a fair share.

Without a cap, the first worker to run a long batch can take what its neighbour needs for
the next one, and the neighbour runs out of memory for no fault of its data. With a cap a
worker that needs more than its share gets out of memory in its own process, where the
batch split handles it.
"""

from __future__ import annotations

import logging

log = logging.getLogger("tartok_tui.worker")

SHARED_PART = 0.95
"""The part of a GPU's memory the workers' allocators divide among them: the rest is for
what the caching allocator does not count (each process's CUDA context, library
workspaces)."""


def memory_fraction(sharers: int) -> float | None:
    """The fraction of the GPU's memory each of ``sharers`` workers may allocate; None for
    a worker alone on its GPU (no cap)."""
    if sharers < 1:
        raise ValueError(f"sharers must be at least 1, got {sharers}")
    if sharers == 1:
        return None
    return SHARED_PART / sharers


def cap_memory(device: str, sharers: int) -> float | None:
    """Cap this process's allocations on ``device`` at its fair share (CUDA only; a no-op
    elsewhere); the fraction set, or None."""
    fraction = memory_fraction(sharers)
    if fraction is None or not device.startswith("cuda"):
        return None
    import torch

    torch.cuda.set_per_process_memory_fraction(fraction, torch.device(device))
    log.info(
        "%d workers share this GPU: capping this worker's memory at %.1f %% of %s "
        "(torch.cuda.set_per_process_memory_fraction)",
        sharers,
        100 * fraction,
        device,
    )
    return fraction

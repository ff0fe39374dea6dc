"""Broken tars for the tests: cut short, not a tar at all, empty."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np


def write_truncated_tar(src: Path | str, dst: Path | str, keep_bytes: int) -> Path:
    """Copy the first ``keep_bytes`` of ``src`` to ``dst`` (an interrupted download)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as f:
        dst.write_bytes(f.read(keep_bytes))
    return dst


def write_non_tar(path: Path | str, size: int = 4096, seed: int = 0) -> Path:
    """A file named like a tar that holds random bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def write_empty_tar(path: Path | str) -> Path:
    """A valid tar with no members."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w"):
        pass
    return path

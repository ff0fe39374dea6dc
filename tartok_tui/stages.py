"""Where a sample (or a whole tar) failed: the ``stage`` of every error record, in one list."""

from __future__ import annotations

import enum


class Stage(enum.StrEnum):
    SAMPLE = "sample"
    """No audio member, no JSON, invalid JSON, or a member over its size limit."""
    DECODE = "decode"
    """Audio that neither libsndfile nor FFmpeg can decode."""
    EMPTY = "empty"
    NONFINITE = "nonfinite"
    TOO_SHORT = "too_short"
    """Under 400 samples at 16 kHz: no token frame fits."""
    TOO_LONG = "too_long"
    """Over --max-duration."""
    MODEL = "model"
    """Any other model failure for that clip alone (never a lost device)."""
    WORKER_CRASH = "worker_crash"
    """The sample an isolated tar's worker died in (a lost device never blames one)."""
    TAR = "tar"
    """The tar itself (key null): truncated, corrupt or empty; samples before it are kept."""

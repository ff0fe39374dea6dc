"""Prepared clips and the one host buffer a batch travels to the device in.

Per-clip work (the feature extractor's normalisation, the speaker reference) is done once
per clip where the clip is decoded (`prepare_clip`), so that only copying is left between
two model batches; `pack` lays a batch out in one buffer (pinned for a GPU) that reaches
the device in one copy, lengths included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tartok_tui.audio import reference_clip


def plan_padded(lengths: Sequence[int], budget: float) -> list[list[int]]:
    """Indices into ``lengths``, longest first, grouped so that each group padded to its
    longest fits ``budget`` (a clip longer than the budget is a group of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted longest first, so the first clip of a group sets its padded length.
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1) * longest > budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@dataclass(frozen=True, eq=False)
class PreparedClip:
    """A 16 kHz clip ready for the model; len() is its number of samples."""

    samples: np.ndarray
    """float32 (N,): zero mean, unit variance, as wav2vec2's feature extractor makes it."""
    reference: np.ndarray
    """float32 (ref_len,): the speaker reference (the clip's start, tiled when shorter)."""

    def __len__(self) -> int:
        return int(self.samples.shape[0])


def prepare_clip(wav: np.ndarray, ref_len: int) -> PreparedClip:
    """A float32 16 kHz clip -> PreparedClip (N must be at least 1)."""
    w = np.asarray(wav, dtype=np.float32)
    # The official feature extractor's normalisation, per clip on its own samples, in
    # float32 numpy, so the rounding is the same.
    samples = (w - w.mean()) / np.sqrt(w.var() + 1e-7)
    # A copy: the reference must not keep a long clip's whole buffer alive.
    reference = np.array(reference_clip(w, ref_len), dtype=np.float32, copy=True)
    return PreparedClip(samples, reference)


def as_prepared(clip: PreparedClip | np.ndarray, ref_len: int) -> PreparedClip:
    return clip if isinstance(clip, PreparedClip) else prepare_clip(clip, ref_len)


@dataclass(frozen=True, eq=False)
class HostBatch:
    """A batch laid out in one host buffer: int64 lengths (B,), then float32 samples
    (B, longest) zero-padded, then float32 references (B, ref_len)."""

    buffer: torch.Tensor
    """uint8, pinned when bound for a GPU."""
    lengths: list[int]
    ref_len: int

    @property
    def longest(self) -> int:
        return max(self.lengths)

    @property
    def padded(self) -> bool:
        longest = self.longest
        return any(n != longest for n in self.lengths)

    def views(self, buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lengths (B,), samples (B, longest), references (B, ref_len)) over `buffer`,
        this batch's buffer or its copy on a device."""
        b, longest = len(self.lengths), self.longest
        starts = _offsets(b, longest, self.ref_len)
        lengths = buffer[starts[0] : starts[0] + 8 * b].view(torch.int64)
        samples = buffer[starts[1] : starts[1] + 4 * b * longest].view(torch.float32)
        refs = buffer[starts[2] : starts[2] + 4 * b * self.ref_len].view(torch.float32)
        return lengths, samples.view(b, longest), refs.view(b, self.ref_len)

    def to(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The views on `device`, after one copy (asynchronous from pinned memory)."""
        if device.type == "cpu":
            return self.views(self.buffer)
        return self.views(self.buffer.to(device, non_blocking=self.buffer.is_pinned()))


_ALIGN = 128
"""Each part starts on this many bytes, so that device kernels see aligned rows."""


def _offsets(b: int, longest: int, ref_len: int) -> tuple[int, int, int, int]:
    """Byte offsets of lengths, samples and references in the buffer, and its size."""
    out, at = [], 0
    for size in (8 * b, 4 * b * longest, 4 * b * ref_len):
        out.append(at)
        at += -(-size // _ALIGN) * _ALIGN
    return out[0], out[1], out[2], at


def pack(clips: Sequence[PreparedClip], ref_len: int, pin: bool) -> HostBatch:
    """Lay `clips` out in one buffer (see HostBatch); `pin` for a copy to a GPU."""
    lengths = [len(c) for c in clips]
    b, longest = len(clips), max(lengths)
    nbytes = _offsets(b, longest, ref_len)[3]
    buffer = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)
    batch = HostBatch(buffer, lengths, ref_len)
    lengths_t, samples_t, refs_t = batch.views(buffer)
    lengths_t.copy_(torch.tensor(lengths, dtype=torch.int64))
    samples, refs = samples_t.numpy(), refs_t.numpy()
    for row, ref, clip, n in zip(samples, refs, clips, lengths, strict=True):
        row[:n] = clip.samples
        row[n:] = 0.0
        ref[:] = clip.reference
    return batch

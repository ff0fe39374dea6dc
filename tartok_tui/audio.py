"""Audio bytes -> mono float32 at the model rate, prepared exactly as the official tokenizer does.

The official pipeline decodes with soundfile (float64), keeps the first channel, resamples with
soxr "VHQ" and normalises the volume, all in float64, then hands float32 to the model. The
float64 steps are kept here because resampling or normalising in float32 rounds differently and
moves near-tie tokens.
"""

from __future__ import annotations

import io
import re

import numpy as np
import soundfile
import soxr

MIN_SAMPLES = 400
"""The model's receptive field: a clip shorter than this yields no token at all."""


class AudioError(Exception):
    """A sample's audio cannot be tokenized.

    stage: "decode" (undecodable bytes), "empty", "nonfinite", "too_short", "too_long".
    """

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _decode(data: bytes) -> tuple[np.ndarray, int]:
    """First channel as float64 at its native rate; AudioError on anything unreadable."""
    if not data:
        raise AudioError("empty", "no audio bytes")
    try:
        audio, sr = soundfile.read(io.BytesIO(data), dtype="float64", always_2d=True)
    except Exception as exc:  # libsndfile reports every malformed input as a different type
        # libsndfile names the in-memory file by its address; drop it so that the
        # same input always gives the same error record.
        message = _OBJECT_REPR.sub("<audio bytes>", str(exc))
        raise AudioError("decode", f"{type(exc).__name__}: {message}") from exc
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise AudioError("empty", "the file holds no samples")
    if sr <= 0:
        raise AudioError("decode", f"invalid sample rate {sr}")
    return np.ascontiguousarray(audio[:, 0]), int(sr)


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Decode audio bytes: (first channel as float32 (N,), native sample rate)."""
    audio, sr = _decode(data)
    return audio.astype(np.float32), sr


def normalize_volume(audio: np.ndarray, coeff: float = 0.2) -> np.ndarray:
    """The official volume normalisation, step for step (float64 in, float64 out)."""
    magnitudes = np.sort(np.abs(audio))
    if magnitudes[-1] < 0.1:
        audio = audio / max(magnitudes[-1], 1e-3) * 0.1
    loud = magnitudes[magnitudes > 0.01]
    n = loud.shape[0]
    if n <= 10:
        return audio
    volume = np.mean(loud[int(0.9 * n) : int(0.99 * n)])
    audio = audio * np.clip(coeff / volume, a_min=0.1, a_max=10)
    peak = np.max(np.abs(audio))
    if peak > 1:
        audio = audio / peak
    return audio


def prepare_audio(
    data: bytes,
    *,
    sample_rate: int = 16000,
    volume_normalize: bool = True,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Bytes -> float32 (N,) at `sample_rate`, as the official tokenizer prepares a clip.

    Raises AudioError for undecodable, empty, non-finite, too short (< 400 samples after
    resampling) or too long (> max_seconds) audio.
    """
    audio, sr = _decode(data)
    if max_seconds is not None and audio.shape[0] / sr > max_seconds:
        raise AudioError("too_long", f"{audio.shape[0] / sr:.1f} s > {max_seconds:g} s")
    if not np.isfinite(audio).all():
        raise AudioError("nonfinite", "the decoded samples contain NaN or infinity")
    if sr != sample_rate:
        audio = soxr.resample(audio, sr, sample_rate, quality="VHQ")
    if audio.shape[0] < MIN_SAMPLES:
        raise AudioError(
            "too_short",
            f"{audio.shape[0]} samples at {sample_rate} Hz < {MIN_SAMPLES} (no token fits)",
        )
    if volume_normalize:
        audio = normalize_volume(audio)
    return audio.astype(np.float32)


def reference_clip(wav: np.ndarray, length: int) -> np.ndarray:
    """The speaker reference: the first `length` samples, the clip tiled first when shorter."""
    if wav.shape[0] == 0:
        raise AudioError("empty", "no samples for the reference clip")
    if wav.shape[0] < length:
        wav = np.tile(wav, length // wav.shape[0] + 1)
    return wav[:length]


def probe_duration(data: bytes) -> float | None:
    """Duration in seconds from the header alone; None when the header does not say."""
    try:
        info = soundfile.info(io.BytesIO(data))
    except Exception:  # an unknown header is an answer here ("unknown"), not an error
        return None
    if info.samplerate <= 0 or info.frames <= 0:
        return None
    return info.frames / info.samplerate

"""Audio bytes -> mono float32 at the model rate, prepared exactly as the official tokenizer does.

The official pipeline decodes with soundfile (float64), keeps the first channel, resamples with
soxr "VHQ" and normalises the volume, all in float64, then hands float32 to the model. The
float64 steps are kept here because resampling or normalising in float32 rounds differently and
moves near-tie tokens.

Decoding is bounded: the duration in the header is checked before any sample is decoded, and
no more than ``max_seconds`` of audio (plus one block) is ever decoded, so a small file that
claims or holds hours of audio costs no more memory than a clip at the limit. What libsndfile
cannot open (AAC/m4a, webm, wma, ...) is decoded with FFmpeg through PyAV, under the same rules.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING

import numpy as np
import soundfile
import soxr

from tartok_tui.stages import Stage

if TYPE_CHECKING:  # PyAV is imported on first use: most datasets never need it
    import av
    from av.container import InputContainer

MIN_SAMPLES = 400
"""The model's receptive field: a clip shorter than this yields no token at all."""
MAX_SAMPLE_RATE = 384_000
"""Rates above this (the highest in studio use) are refused: a header claiming gigahertz
would otherwise size the decode buffer."""
_ONE_READ_SAMPLES = 1 << 24
"""Up to this many samples (all channels, 128 MiB as float64) libsndfile is asked for the whole
clip in one read, as ``soundfile.read`` does: its decoder of MPEG-2 MP3 (16/24 kHz) gives other
samples when the same file is read in pieces, and one read keeps tokens identical to the
official path."""
_BLOCK_SAMPLES = 1 << 20
"""Samples (all channels) per read when a clip is read in blocks."""
_UNKNOWN_FRAMES = 1 << 62
"""libsndfile reports a length it does not know (a FLAC header with no total) as SF_COUNT_MAX."""


class AudioError(Exception):
    """A sample's audio cannot be tokenized.

    stage: "decode" (undecodable bytes), "empty", "nonfinite", "too_short", "too_long".
    """

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _clean(exc: BaseException) -> str:
    # libsndfile names the in-memory file by its address; drop it so that the
    # same input always gives the same error record.
    return f"{type(exc).__name__}: {_OBJECT_REPR.sub('<audio bytes>', str(exc))}"


def _too_long(seconds: float, max_seconds: float, how: str = "") -> AudioError:
    return AudioError(Stage.TOO_LONG, f"{how}{seconds:.1f} s > {max_seconds:g} s")


def _cut_short(decoded_seconds: float, max_seconds: float) -> AudioError:
    return AudioError(
        Stage.TOO_LONG, f"over {max_seconds:g} s (decoding stopped at {decoded_seconds:.1f} s)"
    )


def _check_rate(sr: int) -> None:
    if sr <= 0:
        raise AudioError(Stage.DECODE, f"invalid sample rate {sr}")
    if sr > MAX_SAMPLE_RATE:
        raise AudioError(Stage.DECODE, f"sample rate {sr} Hz is above {MAX_SAMPLE_RATE} Hz")


def _frame_limit(sr: int, max_seconds: float | None) -> int | None:
    """The most frames a clip within the limit can hold."""
    return None if max_seconds is None else int(max_seconds * sr)


# -- libsndfile -------------------------------------------------------------------------------


def _read_blocks(f: soundfile.SoundFile, frames: int) -> np.ndarray:
    """The first channel of ``frames`` frames, read a block at a time (many channels)."""
    block = max(1, _BLOCK_SAMPLES // f.channels)
    buffer = np.empty((block, f.channels), dtype=np.float64)
    audio = np.empty(frames, dtype=np.float64)
    total = 0
    while total < frames:
        got = f.read(min(block, frames - total), dtype="float64", always_2d=True, out=buffer)
        if got.shape[0] == 0:
            break
        audio[total : total + got.shape[0]] = got[:, 0]
        total += got.shape[0]
    return audio[:total]


def _decode_sndfile(
    f: soundfile.SoundFile, max_seconds: float | None
) -> tuple[np.ndarray, int] | None:
    """The first channel, or None when libsndfile cannot tell the clip's length."""
    sr = int(f.samplerate)
    _check_rate(sr)
    if f.channels <= 0:
        raise AudioError(Stage.DECODE, f"invalid channel count {f.channels}")
    limit = _frame_limit(sr, max_seconds)
    frames = int(f.frames)
    if frames >= _UNKNOWN_FRAMES:
        # The header does not say how long the clip is. soundfile.read cannot read such a
        # file at all (it sizes its buffer by the header, and seeks after every read):
        # FFmpeg decodes it, up to the limit.
        return None
    # soundfile.read seeks to the start before reading, and libsndfile's MP3 decoder gives
    # other samples without that seek: do the same.
    f.seek(0)
    if frames <= 0:
        raise AudioError(Stage.EMPTY, "the file holds no samples")
    if limit is not None and frames > limit:
        raise _too_long(frames / sr, max_seconds or 0.0, "the header says ")
    if frames * f.channels <= _ONE_READ_SAMPLES:
        # What soundfile.read does: one read of the header's frame count.
        audio = f.read(frames, dtype="float64", always_2d=True)
        return np.ascontiguousarray(audio[:, 0]), sr
    return _read_blocks(f, frames), sr


# -- FFmpeg (PyAV) ----------------------------------------------------------------------------

_INT_SCALE = {np.dtype(np.uint8): 128.0, np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2.0**31}


def _first_channel(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame's first channel as float64 in [-1, 1]."""
    array = frame.to_ndarray()
    channels = frame.layout.nb_channels
    first = array[0] if frame.format.is_planar else array.reshape(-1, channels)[:, 0]
    if first.dtype.kind == "f":
        return first.astype(np.float64)
    if first.dtype == np.uint8:
        return (first.astype(np.float64) - 128.0) / 128.0
    scale = _INT_SCALE.get(first.dtype, 2.0**63)
    return first.astype(np.float64) / scale


def _header_seconds(container: InputContainer, stream: av.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _decode_ffmpeg(data: bytes, max_seconds: float | None) -> tuple[np.ndarray, int]:
    import av  # imported on first use: most datasets never need it

    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise AudioError(Stage.DECODE, f"no audio stream in the {container.format.name} data")
        stream = container.streams.audio[0]
        seconds = _header_seconds(container, stream)
        if max_seconds is not None and seconds is not None and seconds > max_seconds:
            raise _too_long(seconds, max_seconds, "the header says ")
        parts: list[np.ndarray] = []
        total = 0
        sr = 0
        limit: int | None = None
        for frame in container.decode(stream):
            if sr == 0:
                sr = int(frame.sample_rate)
                _check_rate(sr)
                limit = _frame_limit(sr, max_seconds)
            elif frame.sample_rate != sr:
                raise AudioError(
                    Stage.DECODE, f"the sample rate changes ({sr} -> {frame.sample_rate})"
                )
            parts.append(_first_channel(frame))
            total += frame.samples
            if limit is not None and total > limit:
                raise _cut_short(total / sr, max_seconds or 0.0)
    if total == 0:
        raise AudioError(Stage.EMPTY, "the file holds no samples")
    return np.concatenate(parts), sr


# -- decoding ---------------------------------------------------------------------------------


def _decode(data: bytes, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """First channel as float64 at its native rate; AudioError on anything unreadable or longer
    than ``max_seconds``."""
    if not data:
        raise AudioError(Stage.EMPTY, "no audio bytes")
    decoded: tuple[np.ndarray, int] | None = None
    why_not = "the header gives no length"
    try:
        f = soundfile.SoundFile(io.BytesIO(data))
    except Exception as exc:  # libsndfile reports every unknown input as a different type
        why_not = _clean(exc)
    else:
        with f:
            try:
                decoded = _decode_sndfile(f, max_seconds)
            except AudioError:
                raise
            except Exception as exc:  # a header libsndfile accepted over data it cannot read
                raise AudioError(Stage.DECODE, _clean(exc)) from exc
    if decoded is None:
        try:
            decoded = _decode_ffmpeg(data, max_seconds)
        except AudioError:
            raise
        except Exception as exc:  # FFmpeg's errors are as varied
            raise AudioError(Stage.DECODE, f"libsndfile: {why_not}; ffmpeg: {_clean(exc)}") from exc
    audio, sr = decoded
    if audio.shape[0] == 0:
        raise AudioError(Stage.EMPTY, "the file holds no samples")
    return audio, sr


def decode_audio(data: bytes, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode audio bytes: (first channel as float32 (N,), native sample rate)."""
    audio, sr = _decode(data, max_seconds)
    return audio.astype(np.float32), sr


def normalize_volume(audio: np.ndarray, coeff: float = 0.2) -> np.ndarray:
    """The official volume normalisation, bit for bit (float64 in, float64 out).

    The official code sorts every |x| to average the 90th..99th percentile of the loud ones
    (|x| > 0.01). The loud ones are the top of the sorted |x|, so one partition at the 90th
    percentile's rank and a sort of what lies above it give the same values in the same order,
    hence the same mean, at a fraction of the cost.
    """
    magnitudes = np.abs(audio)
    peak = magnitudes.max()
    if not np.isfinite(peak):
        return _normalize_by_sorting(audio, coeff)  # where NaN sorts is not worth copying
    if peak < 0.1:
        audio = audio / max(peak, 1e-3) * 0.1
    n = int(np.count_nonzero(magnitudes > 0.01))
    if n <= 10:
        return audio
    lo, hi = int(0.9 * n), int(0.99 * n)
    start = magnitudes.shape[0] - n + lo  # the rank of the loud ones' lo-th in all of |x|
    magnitudes.partition(start)
    top = np.sort(magnitudes[start:])
    volume = np.mean(top[: hi - lo])
    audio = audio * np.clip(coeff / volume, a_min=0.1, a_max=10)
    peak = np.max(np.abs(audio))
    if peak > 1:
        audio = audio / peak
    return audio


def _normalize_by_sorting(audio: np.ndarray, coeff: float) -> np.ndarray:
    """The official code as written (a full sort)."""
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
    resampling) or too long (> max_seconds, judged from the header before decoding when it
    says, and never decoding more than max_seconds) audio.
    """
    audio, sr = _decode(data, max_seconds)
    if max_seconds is not None and audio.shape[0] / sr > max_seconds:
        raise _too_long(audio.shape[0] / sr, max_seconds)
    if not np.isfinite(audio).all():
        raise AudioError(Stage.NONFINITE, "the decoded samples contain NaN or infinity")
    if sr != sample_rate:
        audio = soxr.resample(audio, sr, sample_rate, quality="VHQ")
    if audio.shape[0] < MIN_SAMPLES:
        raise AudioError(
            Stage.TOO_SHORT,
            f"{audio.shape[0]} samples at {sample_rate} Hz < {MIN_SAMPLES} (no token fits)",
        )
    if volume_normalize:
        audio = normalize_volume(audio)
    return audio.astype(np.float32)


def reference_clip(wav: np.ndarray, length: int) -> np.ndarray:
    """The speaker reference: the first `length` samples, the clip tiled first when shorter."""
    if wav.shape[0] == 0:
        raise AudioError(Stage.EMPTY, "no samples for the reference clip")
    if wav.shape[0] < length:
        wav = np.tile(wav, length // wav.shape[0] + 1)
    return wav[:length]


def probe_duration(data: bytes) -> float | None:
    """Duration in seconds from the header alone; None when the header does not say."""
    try:
        info = soundfile.info(io.BytesIO(data))
    except Exception:  # an unknown header is an answer here ("unknown"), not an error
        return None
    if info.samplerate <= 0 or info.frames <= 0 or info.frames >= _UNKNOWN_FRAMES:
        return None
    return info.frames / info.samplerate

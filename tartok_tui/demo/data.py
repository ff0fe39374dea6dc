"""Synthetic Emilia-style tars: the demo's dataset, and the tests' and benchmarks'.

The audio is speech-like (voiced harmonics with a moving pitch and moving
formants, syllable-rate loudness, noise bursts for fricatives) so that a
codec's tokens actually vary between clips. Tars are byte-identical for the
same arguments: fixed member metadata, seeded randomness.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

BROKEN_KINDS = frozenset(
    {
        *("no_audio", "no_json", "bad_json", "nested_json"),
        *("undecodable_audio", "empty_audio", "too_long"),
    }
)
NESTED_JSON_DEPTH = 200_000
"""Brackets in a "nested_json" member: far past any parser's recursion limit."""
_SNDFILE_FORMATS: dict[str, tuple[str, str | None]] = {
    "mp3": ("MP3", None),
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),  # 8, 12, 16, 24 or 48 kHz only
}
"""format -> (libsndfile format, subtype)"""
_FFMPEG_FORMATS = {"m4a": ("mp4", "aac")}
"""format -> (container, codec), written with PyAV: libsndfile cannot write or read them"""
_FORMATS = frozenset({*_SNDFILE_FORMATS, *_FFMPEG_FORMATS})
LAYOUTS = ("grouped", "ungrouped")
_WORDS = {
    "EN": [
        *("the", "a", "voice", "model", "data", "sound", "river", "light", "window"),
        *("morning", "quiet", "seven", "over", "under", "story", "simple", "always"),
        *("little", "between", "number"),
    ],
    "ZH": list("我们今天天气很好声音模型数据学习中文语言时间工作朋友"),
}


@dataclass(frozen=True)
class GeneratedSample:
    """What :func:`write_emilia_tar` put into the tar for one sample."""

    index: int
    key: str
    broken: str | None
    """The injected defect, None for a good sample."""
    duration: float
    meta: dict


def synth_speech(rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    """A speech-like mono float32 clip in [-1, 1]."""
    n = max(int(seconds * sr), 1)
    t = np.arange(n, dtype=np.float64) / sr

    def wander(points_per_s: float, lo: float, hi: float) -> np.ndarray:
        # A smooth random trajectory: random control points, linearly interpolated.
        k = max(int(seconds * points_per_s), 1) + 2
        return np.interp(t, np.linspace(0.0, seconds, k), rng.uniform(lo, hi, k))

    base = rng.uniform(90.0, 240.0)
    f0 = base * wander(3.0, 0.8, 1.25) * (1.0 + 0.02 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    n_harm = int(min(30, (sr / 2) // (base * 1.3)))
    # Harmonic gains change slowly: evaluate the formant curves every 10 ms and
    # hold them, instead of at every sample.
    hop = max(sr // 100, 1)
    frame = np.minimum(np.arange(n) // hop, (n - 1) // hop)
    t_c = t[::hop]
    k = np.arange(1, n_harm + 1, dtype=np.float64)[:, None]
    freq = k * f0[::hop][None, :]
    # A glottal-like spectral tilt plus three moving formant peaks.
    gain = 0.3 / k * np.ones_like(freq)
    for j, (lo, hi) in enumerate(((300, 900), (900, 2400), (2200, 3200))):
        points = max(int(seconds * 4), 1) + 2
        fc = np.interp(t_c, np.linspace(0.0, seconds, points), rng.uniform(lo, hi, points))
        bw = 120.0 + 70.0 * j
        gain += np.exp(-0.5 * ((freq - fc[None, :]) / bw) ** 2) / (j + 1)
    gain *= freq < sr / 2 - 200  # no harmonic above Nyquist
    # sin(k*phase) by the Chebyshev recurrence: one multiply-add per harmonic
    # instead of a sine per harmonic and sample.
    two_cos = 2.0 * np.cos(phase)
    prev, cur = np.zeros(n), np.sin(phase)
    voiced = np.zeros(n)
    for h in range(n_harm):
        voiced += gain[h][frame] * cur
        prev, cur = cur, two_cos * cur - prev

    # Loudness rises and falls at a syllable rate of 3-6 Hz.
    syllables = ((1.0 + np.sin(2 * np.pi * np.cumsum(wander(2.0, 3.0, 6.0)) / sr)) / 2) ** 1.5
    voicing = wander(2.0, -1.0, 1.0) > -0.3
    noise = rng.standard_normal(n)
    noise = np.convolve(noise, [1.0, -0.9], mode="same")  # tilt towards highs, like /s/
    burst = wander(3.0, 0.0, 1.0) ** 6
    signal = voiced * syllables * voicing + 0.15 * noise * burst + 0.002 * rng.standard_normal(n)
    signal *= 0.5 / (np.abs(signal).max() + 1e-9)
    return signal.astype(np.float32)


def _encode(wav: np.ndarray, sr: int, audio_format: str) -> bytes:
    if audio_format in _FFMPEG_FORMATS:
        return _encode_ffmpeg(wav, sr, *_FFMPEG_FORMATS[audio_format])
    fmt, subtype = _SNDFILE_FORMATS[audio_format]
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _encode_ffmpeg(wav: np.ndarray, sr: int, container: str, codec: str) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=sr, layout="mono")
        if not isinstance(stream, av.AudioStream):
            raise ValueError(f"{codec} is not an audio codec")
        samples = wav.astype(np.float32).reshape(1, -1)
        for start in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start : start + 1024]), format="fltp", layout="mono"
            )
            frame.sample_rate = sr
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000  # fixed, so the tar's bytes depend on the arguments only
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _broken_map(broken: Mapping[int, str] | Iterable[tuple[int, str]]) -> dict[int, str]:
    pairs = broken.items() if isinstance(broken, Mapping) else broken
    result = dict(pairs)
    unknown = set(result.values()) - BROKEN_KINDS
    if unknown:
        raise ValueError(f"unknown broken kinds {sorted(unknown)}; known: {sorted(BROKEN_KINDS)}")
    return result


def write_emilia_tar(
    path: Path | str,
    n_samples: int,
    seed: int = 0,
    lang: str = "EN",
    audio_format: str = "mp3",
    sr: int = 24000,
    min_s: float = 3.0,
    max_s: float = 8.0,
    broken: Mapping[int, str] | Iterable[tuple[int, str]] = (),
    too_long_s: float = 65.0,
    batch: int = 0,
    layout: str = "grouped",
) -> list[GeneratedSample]:
    """Write an Emilia-style tar of ``<id>.json`` + ``<id>.<audio_format>`` pairs.

    ``layout`` "grouped" puts each sample's members next to each other (as webdataset
    writers do); "ungrouped" writes every JSON member, then every audio member, as a tar
    packed from a directory can be (the reader then needs its indexed mode).

    ``broken`` maps sample index -> one of BROKEN_KINDS: "no_audio" / "no_json"
    drop a member, "bad_json" writes invalid JSON, "nested_json" valid JSON nested
    200,000 deep (json.loads raises RecursionError), "undecodable_audio" random
    bytes, "empty_audio" a zero-byte audio member, "too_long" a ``too_long_s``
    clip (longer than the default 60 s limit). Returns what was written.
    """
    if audio_format not in _FORMATS:
        raise ValueError(f"audio_format must be one of {sorted(_FORMATS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    held_back: list[tuple[str, bytes]] = []
    defects = _broken_map(broken)
    rng = np.random.default_rng(seed)
    words = _WORDS.get(lang.upper(), _WORDS["EN"])
    joiner = "" if lang.upper() == "ZH" else " "
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written: list[GeneratedSample] = []
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(n_samples):
            kind = defects.get(i)
            duration = too_long_s if kind == "too_long" else float(rng.uniform(min_s, max_s))
            speaker = f"{lang}_B{batch:05d}_S{i // 10:05d}"
            key = f"{speaker}_W{i:06d}"
            text = joiner.join(rng.choice(words, size=int(rng.integers(4, 12))).tolist())
            meta = {
                "id": key,
                "wav": f"{lang}_B{batch:05d}/{speaker}/{audio_format}/{key}.{audio_format}",
                "text": text,
                "duration": round(duration, 3),
                "speaker": speaker,
                "language": lang.lower(),
                "dnsmos": round(float(rng.uniform(3.0, 3.6)), 4),
            }
            wav = synth_speech(rng, duration, sr)
            if kind == "undecodable_audio":
                # Text, not random bytes: random bytes can hold MPEG sync words
                # that a lenient decoder would accept as audio.
                audio = b"this is not audio\n" * 256
            elif kind == "empty_audio":
                audio = b""
            else:
                audio = _encode(wav, sr, audio_format)
            meta_bytes = json.dumps(meta, ensure_ascii=False).encode("utf-8")
            if kind == "bad_json":
                meta_bytes = meta_bytes[: len(meta_bytes) // 2]
            elif kind == "nested_json":
                meta_bytes = b"[" * NESTED_JSON_DEPTH + b"]" * NESTED_JSON_DEPTH
            # json sorts before the audio extension, as in Emilia's tars.
            if kind != "no_json":
                _add_member(tar, f"{key}.json", meta_bytes)
            if kind != "no_audio":
                if layout == "grouped":
                    _add_member(tar, f"{key}.{audio_format}", audio)
                else:
                    held_back.append((f"{key}.{audio_format}", audio))
            written.append(GeneratedSample(i, key, kind, duration, meta))
        for name, data in held_back:
            _add_member(tar, name, data)
    return written

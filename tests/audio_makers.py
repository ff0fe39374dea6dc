"""Audio files made by the tests: libsndfile for what it writes, FFmpeg (PyAV) for the rest."""

from __future__ import annotations

import io

import av
import numpy as np
import soundfile as sf

# name -> (soundfile format, subtype); the rest are written with PyAV.
SNDFILE_FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_24"),
    "mp3": ("MP3", None),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
}
# name -> (container, codec)
FFMPEG_FORMATS = {"m4a": ("mp4", "aac"), "aac": ("adts", "aac"), "webm": ("webm", "libopus")}
LOSSLESS = frozenset({"wav", "flac"})
RATES = {
    # libsndfile's Opus encoder only takes the Opus rates (8/12/16/24/48 kHz), WebM holds
    # Opus at 48 kHz; everything else here takes all four.
    "opus": (16000, 24000, 48000),
    "webm": (48000,),
}
ALL_RATES = (16000, 24000, 44100, 48000)


def rates_for(fmt: str) -> tuple[int, ...]:
    return RATES.get(fmt, ALL_RATES)


def two_tones(seconds: float, sr: int, channels: int) -> np.ndarray:
    """(N, channels) float64: 440 Hz on the first channel, 1250 Hz on the others."""
    t = np.arange(int(seconds * sr)) / sr
    columns = [0.5 * np.sin(2 * np.pi * 440.0 * t)]
    columns += [0.4 * np.sin(2 * np.pi * 1250.0 * t)] * (channels - 1)
    return np.stack(columns, axis=1)


def encode(samples: np.ndarray, sr: int, fmt: str) -> bytes:
    """(N, C) float samples in [-1, 1] -> the bytes of a `fmt` file."""
    if fmt in SNDFILE_FORMATS:
        container, subtype = SNDFILE_FORMATS[fmt]
        buf = io.BytesIO()
        sf.write(buf, samples, sr, format=container, subtype=subtype)
        return buf.getvalue()
    container, codec = FFMPEG_FORMATS[fmt]
    return _ffmpeg_encode(samples, sr, container, codec)


def _ffmpeg_encode(samples: np.ndarray, sr: int, container: str, codec: str) -> bytes:
    channels = samples.shape[1]
    layout = "mono" if channels == 1 else "stereo"
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=sr, layout=layout)
        fmt = stream.codec_context.format
        if fmt.name.startswith("s16"):
            data = np.round(samples * 32767).astype(np.int16)
        elif fmt.name.startswith("s32"):
            data = np.round(samples * (2**31 - 1)).astype(np.int32)
        else:
            data = samples.astype(np.float32)
        step = 960 if codec == "libopus" else 1024
        for start in range(0, len(data), step):
            chunk = data[start : start + step]
            array = np.ascontiguousarray(chunk.T) if fmt.is_planar else chunk.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(array, format=fmt.name, layout=layout)
            frame.sample_rate = sr
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def dominant_hz(x: np.ndarray, sr: int) -> float:
    """The strongest frequency of a clip (its middle second, away from codec edges)."""
    mid = x[len(x) // 2 - sr // 2 : len(x) // 2 + sr // 2]
    spectrum = np.abs(np.fft.rfft(mid * np.hanning(len(mid))))
    return float(np.fft.rfftfreq(len(mid), 1 / sr)[int(np.argmax(spectrum))])


def silent_flac(seconds: float, sr: int, channels: int, *, unknown_length: bool = False) -> bytes:
    """A FLAC of silence, written in pieces (an hour compresses to well under a megabyte).

    ``unknown_length`` zeroes the header's total-samples field, which FLAC allows for a
    stream whose length was not known when the header was written: the decoder cannot
    know how long the clip is before decoding it.
    """
    buf = io.BytesIO()
    chunk = np.zeros((sr * 60, channels), dtype=np.int16)
    left = int(seconds * sr)
    with sf.SoundFile(buf, "w", sr, channels, format="FLAC", subtype="PCM_16") as f:
        while left > 0:
            f.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
    data = bytearray(buf.getvalue())
    if unknown_length:
        # fLaC, then the STREAMINFO block header (4 bytes), then 34 bytes in which the
        # total sample count is the 36 bits after bit 108.
        start, width = 8, 34 * 8
        info = int.from_bytes(data[start : start + 34], "big")
        info &= ~(((1 << 36) - 1) << (width - 108 - 36))
        data[start : start + 34] = info.to_bytes(34, "big")
    return bytes(data)


class _Sink(io.RawIOBase):
    """A write-only, unseekable file: a muxer cannot go back to write the duration."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b) -> int:
        self.data += bytes(b)
        return len(b)


def encode_unknown_length(
    samples: np.ndarray, sr: int, codec: str = "libopus", *, repeat: int = 1
) -> bytes:
    """A Matroska stream (libsndfile cannot read it) whose header holds no duration.

    ``repeat`` writes the samples that many times (an hour of silence takes seconds with
    the "flac" codec and stays under a megabyte).
    """
    channels = samples.shape[1]
    layout = "mono" if channels == 1 else "stereo"
    sink = _Sink()
    with av.open(sink, "w", format="matroska" if codec != "libopus" else "webm") as out:
        stream = out.add_stream(codec, rate=sr, layout=layout)
        data = np.round(samples * 32767).astype(np.int16)
        step = 960 if codec == "libopus" else 4608
        pts = 0
        for _ in range(repeat):
            for start in range(0, len(data), step):
                chunk = data[start : start + step]
                frame = av.AudioFrame.from_ndarray(
                    chunk.reshape(1, -1), format="s16", layout=layout
                )
                frame.sample_rate = sr
                frame.pts = pts
                pts += len(chunk)
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return bytes(sink.data)

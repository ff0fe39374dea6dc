"""Every listed audio format decodes: libsndfile first (the official path), FFmpeg for the rest."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from audio_makers import (
    FFMPEG_FORMATS,
    LOSSLESS,
    SNDFILE_FORMATS,
    dominant_hz,
    encode,
    encode_unknown_length,
    rates_for,
    two_tones,
)

from tartok_tui import audio
from tartok_tui.audio import AudioError, decode_audio, prepare_audio

SECONDS = 1.5
CASES = [
    (fmt, sr, channels)
    for fmt in (*SNDFILE_FORMATS, *FFMPEG_FORMATS)
    for sr in rates_for(fmt)
    for channels in (1, 2)
]
# AAC pads to whole 1024-sample frames, and the ADTS stream also keeps the encoder's
# 1024 samples of priming (MP4 marks them to be dropped).
LENGTH_SLACK = {"m4a": 2048, "aac": 3072}
PRIMING = {"aac": 1024}


@pytest.mark.parametrize(
    ("fmt", "sr", "channels"), CASES, ids=[f"{f}-{r}-{c}ch" for f, r, c in CASES]
)
def test_each_format_decodes_to_its_rate_length_and_first_channel(
    fmt: str, sr: int, channels: int
) -> None:
    source = two_tones(SECONDS, sr, channels)
    decoded, rate = audio._decode(encode(source, sr, fmt))
    assert rate == sr and decoded.dtype == np.float64 and decoded.ndim == 1
    n = len(source)
    assert n <= len(decoded) <= n + LENGTH_SLACK.get(fmt, 0)
    first = source[:, 0]
    if fmt in LOSSLESS:
        np.testing.assert_allclose(decoded, first, atol=4e-5)
    else:
        # Lossy: the first channel's tone, close to it sample by sample once aligned (ADTS
        # keeps the encoder's priming); the other channel holds a different tone, so taking
        # it would fail both checks.
        assert dominant_hz(decoded, sr) == pytest.approx(440.0, abs=2.0)
        lag = PRIMING.get(fmt, 0)
        aligned = decoded[lag : lag + n]
        error = np.sqrt(np.mean((aligned - first[: len(aligned)]) ** 2)) / np.sqrt(
            np.mean(first**2)
        )
        assert error < 0.2, error


@pytest.mark.parametrize("fmt", sorted(SNDFILE_FORMATS))
def test_what_libsndfile_reads_is_decoded_exactly_as_soundfile_read(fmt: str) -> None:
    # The official loader is soundfile.read; its MP3 decoder rounds differently when a file is
    # read in pieces, so anything short of the same call would move tokens.
    sr = 24000 if fmt != "wav" else 44100
    data = encode(two_tones(2.0, sr, 2), sr, fmt)
    expected, expected_sr = sf.read(io.BytesIO(data))
    decoded, rate = audio._decode(data, max_seconds=60.0)
    assert rate == expected_sr
    np.testing.assert_array_equal(decoded, expected[:, 0])


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "opus"])
def test_many_channel_clips_read_in_blocks_give_the_same_samples(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sr = 48000 if fmt == "opus" else 16000
    data = encode(two_tones(2.0, sr, 2), sr, fmt)
    whole, _ = audio._decode(data)
    monkeypatch.setattr(audio, "_ONE_READ_SAMPLES", 1000)
    monkeypatch.setattr(audio, "_BLOCK_SAMPLES", 777)
    blocks, _ = audio._decode(data)
    np.testing.assert_array_equal(blocks, whole)


def test_m4a_is_decoded_by_the_fallback() -> None:
    data = encode(two_tones(SECONDS, 24000, 2), 24000, "m4a")
    with pytest.raises(sf.LibsndfileError):
        sf.info(io.BytesIO(data))
    wav = prepare_audio(data, max_seconds=60.0)
    assert wav.dtype == np.float32
    assert abs(len(wav) - SECONDS * 16000) < 1500


def test_bytes_no_decoder_reads_are_a_decode_error_naming_both() -> None:
    with pytest.raises(AudioError) as err:
        decode_audio(b"this is not audio\n" * 256)
    assert err.value.stage == "decode"
    assert "libsndfile" in err.value.reason and "ffmpeg" in err.value.reason
    assert "0x" not in err.value.reason  # no object addresses: the same input, the same record


def test_a_container_without_audio_is_a_decode_error() -> None:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 16
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), dtype=np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    with pytest.raises(AudioError) as err:
        decode_audio(buf.getvalue())
    assert err.value.stage == "decode" and "no audio stream" in err.value.reason


@pytest.mark.parametrize("fmt", ["m4a", "webm"])
def test_the_fallback_rejects_a_long_clip_from_its_header(fmt: str) -> None:
    sr = 48000
    data = encode(two_tones(5.0, sr, 1), sr, fmt)
    with pytest.raises(AudioError) as err:
        prepare_audio(data, max_seconds=2.0)
    assert err.value.stage == "too_long" and "header says" in err.value.reason
    assert prepare_audio(data, max_seconds=6.0).shape[0] >= 5 * 16000


def test_the_fallback_stops_decoding_at_the_limit_when_the_header_does_not_say() -> None:
    data = encode_unknown_length(two_tones(5.0, 48000, 1), 48000)
    with pytest.raises(AudioError) as err:
        prepare_audio(data, max_seconds=2.0)
    assert err.value.stage == "too_long"
    assert "decoding stopped at 2.0 s" in err.value.reason
    assert prepare_audio(data, max_seconds=6.0).shape[0] == 5 * 16000


@pytest.mark.parametrize("fmt", ["ogg", "opus", "m4a"])
def test_emilia_like_tars_in_every_format_decode(tmp_path, fmt: str) -> None:
    from tartok_tui.demo.data import write_emilia_tar
    from tartok_tui.shards.reader import Sample, iter_samples

    written = write_emilia_tar(tmp_path / "a.tar", 2, audio_format=fmt, min_s=1.0, max_s=1.5)
    samples = [s for s in iter_samples(tmp_path / "a.tar") if isinstance(s, Sample)]
    assert [s.audio_ext for s in samples] == [fmt, fmt]
    for sample, spec in zip(samples, written, strict=True):
        wav = prepare_audio(sample.audio or b"", max_seconds=60.0)
        assert abs(len(wav) / 16000 - spec.duration) < 0.1

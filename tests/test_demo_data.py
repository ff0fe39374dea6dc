"""The synthetic Emilia tars used by tests and the demo."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tar_faults import write_empty_tar, write_non_tar, write_truncated_tar

from tartok_tui.audio import AudioError, prepare_audio
from tartok_tui.demo.data import synth_speech, write_emilia_tar
from tartok_tui.shards.reader import Sample, iter_samples

ID = re.compile(r"^(EN|ZH)_B\d{5}_S\d{5}_W\d{6}$")


def samples_of(path: Path) -> list[Sample]:
    return [s for s in iter_samples(path) if isinstance(s, Sample)]


def test_soundfile_here_writes_mp3() -> None:
    # libsndfile >= 1.1 encodes MP3; the demo and the Emilia-like tests rely on it.
    assert "MP3" in sf.available_formats()


@pytest.mark.parametrize("audio_format", ["mp3", "wav", "flac"])
def test_tar_holds_emilia_pairs_that_decode(tmp_path: Path, audio_format: str) -> None:
    written = write_emilia_tar(
        tmp_path / "a.tar", 3, seed=5, audio_format=audio_format, min_s=1.0, max_s=2.0
    )
    with tarfile.open(tmp_path / "a.tar") as tar:
        names = tar.getnames()
    assert names == [f"{w.key}.{ext}" for w in written for ext in ("json", audio_format)]
    for sample, spec in zip(samples_of(tmp_path / "a.tar"), written, strict=True):
        assert ID.match(sample.key) and sample.meta == spec.meta
        assert set(sample.meta) == {
            "id",
            "wav",
            "text",
            "duration",
            "speaker",
            "language",
            "dnsmos",
        }
        assert sample.meta["id"] == sample.key and sample.meta["language"] == "en"
        audio, sr = sf.read(io.BytesIO(sample.audio))
        assert sr == 24000 and audio.ndim == 1
        assert 1.0 <= spec.duration <= 2.0
        assert abs(len(audio) / sr - spec.duration) < 0.05


def test_same_arguments_give_the_same_bytes(tmp_path: Path) -> None:
    write_emilia_tar(tmp_path / "a.tar", 3, seed=1, min_s=1.0, max_s=1.5)
    write_emilia_tar(tmp_path / "b.tar", 3, seed=1, min_s=1.0, max_s=1.5)
    write_emilia_tar(tmp_path / "c.tar", 3, seed=2, min_s=1.0, max_s=1.5)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert (tmp_path / "a.tar").read_bytes() != (tmp_path / "c.tar").read_bytes()


def test_chinese_text_is_written_as_utf8(tmp_path: Path) -> None:
    [spec] = write_emilia_tar(tmp_path / "a.tar", 1, lang="ZH", audio_format="wav", max_s=3.5)
    assert spec.key.startswith("ZH_") and spec.meta["language"] == "zh"
    assert re.search(r"[\u4e00-\u9fff]", spec.meta["text"])


def test_audio_is_speech_like() -> None:
    rng = np.random.default_rng(0)
    sr = 24000
    clips = [synth_speech(rng, 4.0, sr) for _ in range(3)]
    for clip in clips:
        assert clip.dtype == np.float32 and np.isfinite(clip).all()
        assert 0.1 < np.abs(clip).max() <= 1.0
        frames = clip[: len(clip) // 480 * 480].reshape(-1, 480)  # 20 ms
        rms = np.sqrt((frames**2).mean(axis=1))
        # Syllables and pauses: loudness varies a lot, with quiet stretches.
        assert rms.std() / rms.mean() > 0.5
        assert 0.1 < (rms < 0.1 * rms.max()).mean() < 0.7
        power = np.abs(np.fft.rfft(frames * np.hanning(480), axis=1)) ** 2
        freqs = np.fft.rfftfreq(480, 1 / sr)
        loud = rms > np.median(rms)
        centroid = (power * freqs).sum(axis=1)[loud] / power.sum(axis=1)[loud]
        # Energy sits where speech has it, and the spectrum moves (formants, pitch).
        assert 500 < centroid.mean() < 2500
        assert centroid.std() > 80
    assert not np.allclose(clips[0], clips[1])


@pytest.mark.parametrize(
    ("kind", "stage"),
    [("undecodable_audio", "decode"), ("empty_audio", "empty"), ("too_long", "too_long")],
)
def test_audio_defects_fail_decoding_at_the_right_stage(
    tmp_path: Path, kind: str, stage: str
) -> None:
    written = write_emilia_tar(
        tmp_path / "a.tar", 3, broken={1: kind}, too_long_s=61.0, min_s=1.0, max_s=1.5
    )
    assert [w.broken for w in written] == [None, kind, None]
    samples = samples_of(tmp_path / "a.tar")
    with pytest.raises(AudioError) as info:
        prepare_audio(samples[1].audio, max_seconds=60.0)
    assert info.value.stage == stage
    for good in (samples[0], samples[2]):
        assert prepare_audio(good.audio, max_seconds=60.0).shape[0] > 16000


def test_member_defects(tmp_path: Path) -> None:
    write_emilia_tar(
        tmp_path / "a.tar",
        4,
        broken=[(0, "no_audio"), (1, "no_json"), (2, "bad_json")],
        audio_format="wav",
        max_s=3.2,
    )
    with tarfile.open(tmp_path / "a.tar") as tar:
        exts = [name.rsplit(".", 1)[1] for name in tar.getnames()]
    assert exts == ["json", "wav", "json", "wav", "json", "wav"]
    samples = samples_of(tmp_path / "a.tar")
    assert [s.problem is not None for s in samples] == [True, True, True, False]


def test_unknown_defect_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown broken kinds"):
        write_emilia_tar(tmp_path / "a.tar", 2, broken={0: "on_fire"})


def test_damage_helpers(tmp_path: Path) -> None:
    write_emilia_tar(tmp_path / "a.tar", 2, audio_format="wav", max_s=3.2)
    cut = write_truncated_tar(tmp_path / "a.tar", tmp_path / "cut" / "b.tar", 1000)
    assert cut.read_bytes() == (tmp_path / "a.tar").read_bytes()[:1000]
    junk = write_non_tar(tmp_path / "junk.tar", size=100)
    assert len(junk.read_bytes()) == 100
    with tarfile.open(write_empty_tar(tmp_path / "empty.tar")) as tar:
        assert tar.getnames() == []

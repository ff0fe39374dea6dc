"""Feeding the model: prepare() does the per-clip work, a batch travels in one host buffer that
submit() packs on the caller's thread, and the model reports its progress layer by layer."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from codec_support import encode, speech_like

import tartok_tui.codec.tokenizer as tokenizer_module
from tartok_tui.audio import prepare_audio, reference_clip
from tartok_tui.codec.batch import PreparedClip, pack, prepare_clip
from tartok_tui.codec.tokenizer import BiCodecTokenizer, Tokens


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    tokenizer = BiCodecTokenizer.load(tiny_model_dir, streams=1)
    yield tokenizer
    tokenizer.close()


def test_prepare_does_the_per_clip_work_and_len_is_the_sample_count(
    tok: BiCodecTokenizer,
) -> None:
    data = encode(speech_like(7.5, 24000, seed=4), 24000, "FLAC")
    clip = tok.prepare(data)
    wav = prepare_audio(data)
    assert isinstance(clip, PreparedClip) and len(clip) == wav.shape[0] == 120000
    expected = (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)
    assert clip.samples.dtype == np.float32 and np.array_equal(clip.samples, expected)
    assert np.array_equal(clip.reference, reference_clip(wav, 96000))
    # The reference is its own copy: it does not keep the whole decoded clip alive.
    assert clip.reference.base is None


def test_prepared_clips_and_plain_arrays_give_the_same_tokens(tok: BiCodecTokenizer) -> None:
    wavs = [speech_like(s, 16000, seed=i).astype(np.float32) for i, s in enumerate([0.3, 6.5])]
    prepared = [prepare_clip(w, tok.config.ref_segment_length) for w in wavs]
    assert tok.tokenize(prepared) == tok.tokenize(wavs)
    assert tok.tokenize_many(prepared) == tok.tokenize_many(wavs)


def test_a_batch_is_laid_out_in_one_buffer_with_its_lengths() -> None:
    clips = [prepare_clip(np.linspace(-1, 1, n, dtype=np.float32), 960) for n in (500, 1200, 800)]
    batch = pack(clips, 960, pin=False)
    assert batch.buffer.dtype == torch.uint8 and batch.buffer.dim() == 1
    assert not batch.buffer.is_pinned()
    lengths, samples, refs = batch.to(torch.device("cpu"))
    assert lengths.tolist() == [500, 1200, 800] and batch.padded and batch.longest == 1200
    for row, ref, clip in zip(samples, refs, clips, strict=True):
        n = len(clip)
        assert np.array_equal(row[:n].numpy(), clip.samples)
        assert not row[n:].any()  # zero padding, whatever the buffer held before
        assert np.array_equal(ref.numpy(), clip.reference)
    for part in (lengths, samples, refs):
        assert part.untyped_storage().data_ptr() == batch.buffer.untyped_storage().data_ptr()
        assert (part.data_ptr() - batch.buffer.data_ptr()) % 128 == 0


def test_submit_packs_on_the_calling_thread_and_runs_on_a_stream(
    tok: BiCodecTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    packed_on: list[str] = []
    ran_on: list[str] = []
    real_pack = tokenizer_module.pack

    def recording_pack(*args, **kwargs):
        packed_on.append(threading.current_thread().name)
        return real_pack(*args, **kwargs)

    monkeypatch.setattr(tokenizer_module, "pack", recording_pack)
    tok.fault_hook = lambda n: ran_on.append(threading.current_thread().name)
    try:
        clips = [speech_like(s, 16000, seed=i).astype(np.float32) for i, s in enumerate([1, 2])]
        expected = [tok.tokenize([c])[0] for c in clips]
        packed_on.clear()
        ran_on.clear()
        assert tok.submit(clips).result() == expected
    finally:
        tok.fault_hook = None
    caller = threading.current_thread().name
    assert packed_on == [caller, caller]  # one batch per clip on the CPU
    assert len(ran_on) == 2 and all(name.startswith("stream") for name in ran_on)


def test_the_progress_hook_is_called_per_layer_and_per_stage_on_the_stream(
    tok: BiCodecTokenizer,
) -> None:
    calls: list[str] = []
    tok.progress_hook = lambda: calls.append(threading.current_thread().name)
    try:
        clips = [speech_like(s, 16000, seed=i).astype(np.float32) for i, s in enumerate([1, 2])]
        results = tok.submit(clips).result()
    finally:
        tok.progress_hook = None
    assert all(isinstance(r, Tokens) for r in results)
    per_batch = len(tok.semantic.encoder.layers) + 3  # 16 layers, encoder, VQ, speaker
    assert len(calls) == 2 * per_batch
    assert all(name.startswith("stream") for name in calls)


def test_a_gpu_tokenizer_runs_one_stream_whatever_is_asked(
    tok: BiCodecTokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tartok_tui.codec.tokenizer"):
        gpu = BiCodecTokenizer(
            tok.config, tok.semantic, tok.bicodec, torch.device("cuda", 0), "fp32", 240.0, 4
        )
    assert gpu.streams == 1
    assert "4 streams asked for on cuda:0" in caplog.text

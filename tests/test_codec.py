"""The tokenizer engine: official-layout loading, audio preparation, parity with the reference
tokenizer clip by clip, and batches whose tokens do not depend on their neighbours."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from codec_support import Reference, encode, speech_like, write_reference_model
from safetensors.torch import load_file, save_file

from tartok_tui.audio import AudioError, decode_audio, prepare_audio, probe_duration, reference_clip
from tartok_tui.codec.model_dir import (
    OPTIONAL_BICODEC_KEYS,
    ModelDirError,
    fold_weight_norm,
)
from tartok_tui.codec.random_model import write_random_model
from tartok_tui.codec.tokenizer import BiCodecTokenizer, TokenizeError, Tokens, token_count

# (seconds, sample rate, format, subtype, channels, kind)
PARITY_CASES = [
    (0.03, 16000, "WAV", "PCM_16", 1, "speech"),
    (0.05, 8000, "WAV", "FLOAT", 1, "speech"),
    (0.1, 22050, "FLAC", None, 1, "speech"),
    (0.5, 24000, "MP3", None, 1, "speech"),
    (1.0, 44100, "OGG", "VORBIS", 2, "speech"),
    (1.7, 48000, "WAV", "PCM_24", 2, "speech"),
    (2.5, 16000, "FLAC", None, 1, "quiet"),
    (3.0, 24000, "WAV", "PCM_16", 1, "silent"),
    (4.2, 22050, "MP3", None, 2, "clipped"),
    (5.99, 16000, "OGG", "VORBIS", 1, "speech"),
    (6.0, 8000, "FLAC", None, 1, "speech"),
    (6.01, 48000, "MP3", None, 1, "quiet"),
    (8.3, 44100, "WAV", "PCM_16", 1, "clipped"),
    (11.0, 24000, "FLAC", None, 2, "speech"),
    (15.5, 16000, "WAV", "FLOAT", 1, "speech"),
    (22.0, 22050, "OGG", "VORBIS", 1, "speech"),
    (35.0, 24000, "MP3", None, 1, "speech"),
]


def _signal(seconds: float, sr: int, channels: int, kind: str, seed: int) -> np.ndarray:
    x = speech_like(seconds, sr, seed=seed, level={"quiet": 0.004}.get(kind, 0.3))
    if kind == "silent":
        x = np.zeros_like(x)
    if kind == "clipped":
        x = np.clip(x * 12, -1, 1)
    if channels == 2:
        x = np.stack([x, speech_like(seconds, sr, seed=seed + 100)], axis=1)
    return x


@pytest.fixture(scope="module")
def parity_files() -> list[bytes]:
    return [
        encode(_signal(sec, sr, ch, kind, seed), sr, fmt, subtype)
        for seed, (sec, sr, fmt, subtype, ch, kind) in enumerate(PARITY_CASES)
    ]


@pytest.fixture(scope="module")
def reference_tokens(reference_model_dir: Path, parity_files: list[bytes]) -> list[tuple]:
    ref = Reference(reference_model_dir)
    return [ref.tokens(data) for data in parity_files]


@pytest.fixture(scope="module")
def tokenizer(reference_model_dir: Path) -> BiCodecTokenizer:
    return BiCodecTokenizer.load(reference_model_dir)


def _agreement(ours: list[Tokens], reference: list[tuple]) -> tuple[int, int]:
    same = total = 0
    for mine, (ref_global, ref_semantic) in zip(ours, reference, strict=True):
        assert isinstance(mine, Tokens), mine
        assert mine.global_tokens == ref_global
        assert len(mine.semantic_tokens) == len(ref_semantic)
        same += sum(a == b for a, b in zip(mine.semantic_tokens, ref_semantic, strict=True))
        total += len(ref_semantic)
    return same, total


# -- parity with the reference tokenizer ------------------------------------------------------


def test_the_fixtures_make_tokens_vary(reference_tokens: list[tuple]) -> None:
    globals_ = {tuple(g) for g, _ in reference_tokens}
    semantic = {t for _, s in reference_tokens for t in s}
    assert len(globals_) >= len(reference_tokens) - 3  # silent/quiet clips may coincide
    assert len(semantic) > 50
    counts = np.bincount([t for _, s in reference_tokens for t in s])
    assert counts.max() < 0.3 * counts.sum()  # no code dominates


def test_one_clip_at_a_time_matches_the_reference(
    tokenizer: BiCodecTokenizer, parity_files: list[bytes], reference_tokens: list[tuple]
) -> None:
    ours = [tokenizer.tokenize([tokenizer.prepare(data)])[0] for data in parity_files]
    same, total = _agreement(ours, reference_tokens)
    print(f"semantic agreement, one clip at a time: {same}/{total} = {same / total:.5%}")
    # All equal, as the README says. Our kernels differ from the reference's by rounding
    # (~1e-6 relative); 2 of these 6129 frames have their two nearest codes closer than
    # 1e-5, so a BLAS that rounds differently could flip one of them.
    assert same == total


@pytest.mark.parametrize("order", ["sorted", "reversed", "shuffled", "pairs"])
def test_batches_match_the_reference_whatever_the_neighbours(
    tokenizer: BiCodecTokenizer,
    parity_files: list[bytes],
    reference_tokens: list[tuple],
    order: str,
) -> None:
    wavs = [tokenizer.prepare(data) for data in parity_files]
    idx = list(range(len(wavs)))
    if order == "reversed":
        idx.reverse()
    elif order == "shuffled":
        idx = list(np.random.default_rng(7).permutation(idx))
    groups = (
        [idx[i : i + 2] for i in range(0, len(idx), 2)]
        if order == "pairs"
        else [idx[: len(idx) // 2], idx[len(idx) // 2 :]]
    )
    ours: dict[int, Tokens] = {}
    for group in groups:
        ours.update(zip(group, tokenizer.tokenize([wavs[i] for i in group]), strict=True))
    same, total = _agreement([ours[i] for i in range(len(wavs))], reference_tokens)
    print(f"semantic agreement, batches ({order}): {same}/{total} = {same / total:.5%}")
    assert same == total
    # Batch invariance is exact whatever the machine: the same kernels run per clip.
    assert [ours[i] for i in range(len(wavs))] == [tokenizer.tokenize([w])[0] for w in wavs]


def test_a_clip_gets_the_same_tokens_alone_and_among_longer_or_shorter_clips(
    tokenizer: BiCodecTokenizer,
) -> None:
    clip = tokenizer.prepare(encode(speech_like(3.3, 16000, seed=42), 16000, "WAV"))
    alone = tokenizer.tokenize([clip])[0]
    others = [
        speech_like(s, 16000, seed=s_i).astype(np.float32) for s_i, s in enumerate([0.4, 9.0, 3.3])
    ]
    for neighbours in ([others[0]], [others[1]], others, [clip, clip]):
        batch = tokenizer.tokenize([*neighbours, clip])
        assert batch[-1] == alone


def test_our_random_model_tokenizes_like_the_reference(tiny_model_dir: Path) -> None:
    ours = BiCodecTokenizer.load(tiny_model_dir)
    ref = Reference(tiny_model_dir)
    files = [
        encode(speech_like(s, 24000, seed=i), 24000, "WAV") for i, s in enumerate([0.7, 4.1, 7.3])
    ]
    results = ours.tokenize([ours.prepare(f) for f in files])
    same, total = _agreement(results, [ref.tokens(f) for f in files])
    assert same == total
    assert len({tuple(r.global_tokens) for r in results}) == len(files)


def test_a_clip_shorter_than_the_receptive_field_is_too_short(reference_model_dir: Path) -> None:
    data = encode(speech_like(0.02, 16000), 16000, "WAV")  # 320 samples < 400
    with pytest.raises(AudioError) as err:
        prepare_audio(data)
    assert err.value.stage == "too_short"
    # The reference fails inside wav2vec2's convolutions on such a clip; ours says why.
    with pytest.raises(RuntimeError):
        Reference(reference_model_dir).tokens(data)


# -- the model dir ----------------------------------------------------------------------------


def test_random_model_has_the_official_key_names_and_shapes(
    tiny_model_dir: Path, reference_model_dir: Path
) -> None:
    ours = fold_weight_norm(load_file(tiny_model_dir / "BiCodec" / "model.safetensors"))
    official = fold_weight_norm(load_file(reference_model_dir / "BiCodec" / "model.safetensors"))
    # Both halves are written; only what neither reads is left out: the VQ's usage counts
    # and the ECAPA head that makes the x-vector.
    neither = (
        "quantizer.cluster_size",
        *(f"speaker_encoder.speaker_encoder.{p}." for p in ("pool", "bn", "bn2", "linear")),
    )
    written = {k: v.shape for k, v in official.items() if not k.startswith(neither)}
    assert {k: v.shape for k, v in ours.items()} == written
    assert set(OPTIONAL_BICODEC_KEYS) <= set(written)
    assert set(official) - set(written)  # the reference file does hold those
    raw = load_file(tiny_model_dir / "BiCodec" / "model.safetensors")
    for conv in ("quantizer.in_project", "quantizer.out_project", "decoder.model.0"):
        assert f"{conv}.weight_g" in raw and f"{conv}.weight_v" in raw  # stored weight-normed


def test_the_tiny_model_is_small_and_cheap(tiny_model_dir: Path) -> None:
    # Other tests start workers on it: its cost must stay far below the real model's (about
    # 1.2 GB of weights and 29 GFLOP per audio second). Wall time is too noisy to assert here.
    from torch.utils.flop_counter import FlopCounterMode

    size = sum(f.stat().st_size for f in tiny_model_dir.rglob("*") if f.is_file())
    assert size < 40e6
    tok = BiCodecTokenizer.load(tiny_model_dir)
    counter = FlopCounterMode(display=False)
    with counter:
        out = tok.tokenize_many([speech_like(1.0, 16000, seed=1).astype(np.float32)])
    assert isinstance(out[0], Tokens) and len(out[0].semantic_tokens) == 49
    assert counter.get_total_flops() < 5e9  # the 6 s speaker reference dominates


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_bicodec(root: Path, edit) -> None:
    path = root / "BiCodec" / "model.safetensors"
    state = load_file(path)
    edit(state)
    save_file(state, path)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda s: s.pop("encoder.project.weight"), "encoder.project.weight"),
        (lambda s: s.pop("quantizer.in_project.weight_g"), "quantizer.in_project.weight_v"),
        (lambda s: s.update({"encoder.extra.weight": torch.zeros(3)}), "encoder.extra.weight"),
        (
            lambda s: s.update({"quantizer.codebook.weight": torch.zeros(8192, 9)}),
            "quantizer.codebook.weight",
        ),
    ],
    ids=["missing-key", "half-a-weight-norm", "unexpected-key", "wrong-shape"],
)
def test_a_bad_bicodec_file_is_a_model_dir_error_naming_the_key(
    tiny_model_dir: Path, tmp_path: Path, edit, key: str
) -> None:
    root = _copy(tiny_model_dir, tmp_path / "model")
    _edit_bicodec(root, edit)
    with pytest.raises(ModelDirError) as err:
        BiCodecTokenizer.load(root)
    assert err.value.key == key
    assert err.value.file is not None and err.value.file.endswith("model.safetensors")


@pytest.mark.parametrize(
    "missing",
    [
        "config.yaml",
        "BiCodec/config.yaml",
        "BiCodec/model.safetensors",
        "wav2vec2-large-xlsr-53/config.json",
        "wav2vec2-large-xlsr-53/preprocessor_config.json",
        "wav2vec2-large-xlsr-53/pytorch_model.bin",
    ],
)
def test_a_missing_file_is_a_model_dir_error_naming_it(
    tiny_model_dir: Path, tmp_path: Path, missing: str
) -> None:
    root = _copy(tiny_model_dir, tmp_path / "model")
    (root / missing).unlink()
    with pytest.raises(ModelDirError) as err:
        BiCodecTokenizer.load(root)
    assert err.value.file is not None and Path(missing).parts[0] in err.value.file


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (
            lambda s: s.pop("wav2vec2.encoder.layers.3.attention.k_proj.weight"),
            "encoder.layers.3.attention.k_proj.weight",
        ),
        (lambda s: s.update({"wav2vec2.encoder.bogus": torch.zeros(2)}), "encoder.bogus"),
        (
            lambda s: s.update({"wav2vec2.feature_projection.projection.bias": torch.zeros(5)}),
            "feature_projection.projection.bias",
        ),
    ],
    ids=["missing-key", "unexpected-key", "wrong-shape"],
)
def test_a_bad_wav2vec2_file_is_a_model_dir_error_naming_the_key(
    tiny_model_dir: Path, tmp_path: Path, edit, key: str
) -> None:
    root = _copy(tiny_model_dir, tmp_path / "model")
    path = root / "wav2vec2-large-xlsr-53" / "pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)
    with pytest.raises(ModelDirError) as err:
        BiCodecTokenizer.load(root)
    assert err.value.key is not None and key in err.value.key
    assert err.value.file is not None and err.value.file.endswith("pytorch_model.bin")


def test_a_reference_built_model_reproduces_from_its_seed(
    tmp_path: Path, reference_model_dir: Path
) -> None:
    again = write_reference_model(tmp_path / "again", seed=1)
    a = load_file(again / "BiCodec" / "model.safetensors")
    b = load_file(reference_model_dir / "BiCodec" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_write_random_model_rejects_an_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_random_model(tmp_path, "huge")


# -- audio ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "stage"),
    [
        (b"", "empty"),
        (b"definitely not audio" * 20, "decode"),
        (encode(np.zeros(0), 16000, "WAV"), "empty"),
        (encode(np.array([0.1, np.nan, 0.2] * 400), 16000, "WAV", "FLOAT"), "nonfinite"),
        (encode(np.array([0.1, np.inf, 0.2] * 400), 16000, "WAV", "DOUBLE"), "nonfinite"),
        (encode(speech_like(0.02, 16000), 16000, "WAV"), "too_short"),
        (encode(speech_like(0.02, 8000), 8000, "WAV"), "too_short"),
    ],
    ids=["no-bytes", "garbage", "zero-frames", "nan", "inf", "320-samples", "320-after-resampling"],
)
def test_bad_audio_is_a_typed_audio_error(data: bytes, stage: str) -> None:
    with pytest.raises(AudioError) as err:
        prepare_audio(data)
    assert err.value.stage == stage


def test_a_clip_over_max_seconds_is_too_long() -> None:
    data = encode(speech_like(3.0, 16000), 16000, "WAV")
    with pytest.raises(AudioError) as err:
        prepare_audio(data, max_seconds=2.5)
    assert err.value.stage == "too_long"
    assert prepare_audio(data, max_seconds=3.5).shape == (48000,)


def test_decode_keeps_the_first_channel_at_the_native_rate() -> None:
    left, right = speech_like(0.5, 22050, seed=1), speech_like(0.5, 22050, seed=2)
    audio, sr = decode_audio(encode(np.stack([left, right], axis=1), 22050, "WAV", "FLOAT"))
    assert sr == 22050 and audio.dtype == np.float32
    np.testing.assert_allclose(audio, left, atol=1e-7)


def test_prepare_matches_the_reference_loader() -> None:
    from spark_tts_lib.utils.audio import load_audio

    data = encode(speech_like(2.0, 44100, seed=3), 44100, "FLAC")
    expected = load_audio(io.BytesIO(data), sampling_rate=16000, volume_normalize=True)
    np.testing.assert_array_equal(prepare_audio(data), expected.astype(np.float32))


def test_the_reference_clip_tiles_a_short_clip() -> None:
    wav = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(reference_clip(wav, 12), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1])
    np.testing.assert_array_equal(reference_clip(np.arange(20.0), 6), np.arange(6.0))


def test_probe_duration_reads_the_header() -> None:
    assert probe_duration(encode(np.zeros(24000), 16000, "WAV")) == pytest.approx(1.5)
    assert probe_duration(b"not audio") is None


def test_token_count_is_one_per_hop() -> None:
    assert [token_count(n) for n in (400, 719, 720, 16000, 16080)] == [1, 1, 2, 49, 50]


# -- batching and failure isolation ---------------------------------------------------------------


def test_batches_are_planned_by_padded_seconds_on_a_gpu(tiny_model_dir: Path) -> None:
    tok = BiCodecTokenizer.load(tiny_model_dir, batch_seconds=10.0)
    lengths = [16000 * s for s in (1, 9, 3, 4, 2, 12, 1)]
    assert tok.plan_batches(lengths) == [[i] for i in sorted(range(7), key=lambda i: -lengths[i])]
    tok.device = torch.device("cuda")  # the planner only looks at the device type
    batches = tok.plan_batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(7))
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert len(batch) == 1 or padded <= 10 * 16000
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)


def test_one_bad_clip_does_not_stop_the_others(tiny_model_dir: Path) -> None:
    tok = BiCodecTokenizer.load(tiny_model_dir)
    wavs = [speech_like(1.0, 16000, seed=1).astype(np.float32), np.zeros(100, np.float32)]
    wavs.append(speech_like(2.0, 16000, seed=2).astype(np.float32))
    tok.plan_batches = lambda lengths: [list(range(len(lengths)))]  # one batch with all
    out = tok.tokenize_many(wavs)
    assert isinstance(out[1], TokenizeError) and out[1].stage == "too_short"
    assert out[0] == tok.tokenize([wavs[0]])[0] and out[2] == tok.tokenize([wavs[2]])[0]


def test_unsupported_precision_and_device_are_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError):
        BiCodecTokenizer.load(tiny_model_dir, precision="int8")
    with pytest.raises(ValueError):
        BiCodecTokenizer.load(tiny_model_dir, device="cpu", precision="fp16")
    if not torch.cuda.is_available():
        # The reason names the torch build's CUDA version and what the driver says.
        with pytest.raises(ValueError, match=r"CUDA is not available: torch is built for CUDA"):
            BiCodecTokenizer.load(tiny_model_dir, device="cuda:0")
    assert BiCodecTokenizer.load(tiny_model_dir, device="auto").device.type in ("cpu", "cuda")


def test_wav_written_by_soundfile_round_trips() -> None:
    # Guards the fixtures: every format the parity cases use can be written and read here.
    for fmt, subtype in (("MP3", None), ("OGG", "VORBIS"), ("FLAC", None), ("WAV", "PCM_16")):
        data = encode(speech_like(0.5, 24000), 24000, fmt, subtype)
        audio, sr = sf.read(io.BytesIO(data))
        assert sr == 24000 and audio.shape[0] > 10000


def test_bf16_gives_tokens_of_the_same_shape_and_mostly_the_same_values(
    tiny_model_dir: Path,
) -> None:
    # bf16 is opt-in and not exact; it must still produce a full, valid result.
    wavs = [speech_like(s, 16000, seed=i).astype(np.float32) for i, s in enumerate([1.3, 2.2])]
    exact = BiCodecTokenizer.load(tiny_model_dir).tokenize(wavs)
    low = BiCodecTokenizer.load(tiny_model_dir, precision="bf16").tokenize(wavs)
    for a, b in zip(exact, low, strict=True):
        assert len(a.semantic_tokens) == len(b.semantic_tokens)
        assert len(b.global_tokens) == 32 and all(0 <= t < 4096 for t in b.global_tokens)
        assert all(0 <= t < 8192 for t in b.semantic_tokens)
    same = sum(
        x == y
        for a, b in zip(exact, low, strict=True)
        for x, y in zip(a.semantic_tokens, b.semantic_tokens, strict=True)
    )
    assert same > 0.5 * sum(len(a.semantic_tokens) for a in exact)


def test_streams_tokenize_like_one_stream_and_keep_the_input_order(tiny_model_dir: Path) -> None:
    one = BiCodecTokenizer.load(tiny_model_dir, streams=1)
    many = BiCodecTokenizer.load(tiny_model_dir, streams=3)
    assert (one.streams, many.streams) == (1, 3)
    seconds = [2.5, 0.5, 4.0, 1.0, 3.0, 0.7, 1.5]
    wavs = [speech_like(s, 16000, seed=i).astype(np.float32) for i, s in enumerate(seconds)]
    wavs.insert(3, np.zeros(100, np.float32))  # too short: an error in its own place

    def plain(results: list) -> list:
        return [(r.stage, r.reason) if isinstance(r, TokenizeError) else r for r in results]

    try:
        expected = plain(one.tokenize_many(wavs))
        assert expected[3] == ("too_short", "100 samples < 400")
        assert plain(many.tokenize_many(wavs)) == expected
        # submit(): one call on a stream thread, several at once, results per call.
        futures = [many.submit(wavs[i : i + 2]) for i in range(0, len(wavs), 2)]
        assert plain([r for f in futures for r in f.result()]) == expected
    finally:
        many.close()


def test_default_streams_are_one_per_cpu_thread_and_one_on_a_gpu() -> None:
    from tartok_tui.codec.tokenizer import default_streams

    assert default_streams(torch.device("cpu"), threads=4) == 4
    assert default_streams(torch.device("cpu"), threads=0) == 1
    assert default_streams(torch.device("cuda", 0), threads=16) == 1
    assert default_streams(torch.device("cpu")) == torch.get_num_threads()


def test_warm_up_tokenizes_on_every_stream_and_rejects_a_model_that_cannot_run(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = BiCodecTokenizer.load(tiny_model_dir, streams=2)
    seen: list[list[int]] = []
    real = tok._run

    def counting(batch):
        seen.append(batch.lengths)
        return real(batch)

    monkeypatch.setattr(tok, "_run", counting)
    tok.warm_up(seconds=0.5)
    assert seen == [[8000], [8000]]  # one clip per stream

    def broken(*args):
        raise RuntimeError("kernel not available")

    monkeypatch.setattr(tok.semantic, "forward", broken)
    with pytest.raises(RuntimeError, match=r"self-test clip failed: model: .*kernel not available"):
        tok.warm_up(seconds=0.5)

    def short(batch):
        return [Tokens(global_tokens=[1] * 32, semantic_tokens=[1]) for _ in batch.lengths]

    monkeypatch.setattr(tok, "_run", short)
    with pytest.raises(RuntimeError, match="1 semantic and 32 global tokens for 8000 samples"):
        tok.warm_up(seconds=0.5)
    tok.close()


@pytest.mark.parametrize("frames", [1, 7, 128, 129, 130, 500, 777])
def test_the_fft_positional_conv_matches_the_direct_grouped_conv(frames: int) -> None:
    from tartok_tui.codec.wav2vec import _PositionalConv

    torch.manual_seed(frames)
    conv = _PositionalConv(1024, 128, 16).eval()  # xlsr-53's shape
    x = torch.randn(2, frames, 1024)
    with torch.inference_mode():
        direct = torch.nn.functional.gelu(conv.conv(x.transpose(1, 2))[:, :, :-1]).transpose(1, 2)
        fft = conv(x)
        alone = conv(x[:1, : max(1, frames // 2)])
        padded = x[:1].clone()
        padded[:, max(1, frames // 2) :] = 0
        in_batch = conv(torch.cat([padded, x[1:]]))[:1, : max(1, frames // 2)]
    assert fft.shape == direct.shape
    torch.testing.assert_close(fft, direct, rtol=0, atol=2e-5 * direct.abs().max().item())
    # A clip's frames do not depend on what else is in the batch (padding is zeroed).
    assert torch.equal(alone, in_batch)


def test_wav2vec2_loads_to_the_bit_what_transformers_loads(tiny_model_dir: Path) -> None:
    from transformers import Wav2Vec2Model

    from tartok_tui.codec.model_dir import load_wav2vec2, read_config

    settings, model = load_wav2vec2(read_config(tiny_model_dir), 16)
    state = model.state_dict()
    oracle = Wav2Vec2Model.from_pretrained(tiny_model_dir / "wav2vec2-large-xlsr-53")
    theirs = oracle.state_dict()
    theirs["encoder.pos_conv_embed.conv.weight"] = oracle.encoder.pos_conv_embed.conv.weight
    for key, tensor in state.items():
        assert torch.equal(tensor, theirs[key]), key
    # All but the pre-training mask embedding; the weight norm comes folded.
    assert set(state) == {
        k for k in theirs if "parametrizations" not in k and k != "masked_spec_embed"
    }
    assert settings.hidden_size == oracle.config.hidden_size
    assert settings.conv_kernel == tuple(oracle.config.conv_kernel)


def test_wav2vec2_weights_load_under_any_of_the_saved_names(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Saved from a pre-training model (prefixed, old weight-norm names) or from a plain
    model with parametrized names, in either file format: the same weights."""
    from tartok_tui.codec.model_dir import load_wav2vec2, read_config

    expected = load_wav2vec2(read_config(tiny_model_dir), 16)[1].state_dict()
    root = _copy(tiny_model_dir, tmp_path / "model")
    w2v = root / "wav2vec2-large-xlsr-53"
    state = torch.load(w2v / "pytorch_model.bin", weights_only=True)
    renamed = {}
    for key, tensor in state.items():
        key = key.removeprefix("wav2vec2.")
        key = key.replace(".weight_g", ".parametrizations.weight.original0")
        key = key.replace(".weight_v", ".parametrizations.weight.original1")
        renamed[key] = tensor.contiguous()
    (w2v / "pytorch_model.bin").unlink()
    save_file(renamed, w2v / "model.safetensors")
    loaded = load_wav2vec2(read_config(root), 16)[1].state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        ({"hidden_act": "relu"}, "hidden_act"),
        ({"conv_bias": "yes"}, "conv_bias"),
        ({"num_hidden_layers": "many"}, "num_hidden_layers"),
        ({"do_stable_layer_norm": False}, "do_stable_layer_norm"),
    ],
)
def test_a_bad_wav2vec2_config_is_a_model_dir_error_naming_the_field(
    tiny_model_dir: Path, tmp_path: Path, edit: dict, key: str
) -> None:
    import json

    root = _copy(tiny_model_dir, tmp_path / "model")
    path = root / "wav2vec2-large-xlsr-53" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(ModelDirError) as err:
        BiCodecTokenizer.load(root)
    assert err.value.key == key and err.value.file == str(path)

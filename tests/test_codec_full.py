"""The full-size architecture (real config values, official key names, random weights): it passes
the pre-run check, loads with nothing missing or unexpected and tokenizes like the reference,
alone and in a batch.

The 1.2 GB model is written once per session (this module's fixture) and loaded twice (ours and
the reference): about a minute on two cores, most of it writing and loading that file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from codec_support import Reference, encode, speech_like
from safetensors.torch import load_file

from tartok_tui.codec.model_check import check_model_dir
from tartok_tui.codec.model_dir import UNUSED_BICODEC_PREFIXES, fold_weight_norm
from tartok_tui.codec.random_model import write_random_model
from tartok_tui.codec.tokenizer import BiCodecModel, BiCodecTokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")  # this module alone uses it: once per session
def full_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_model(tmp_path_factory.mktemp("full-model"), "full", seed=3)


@pytest.fixture(scope="module")
def full_tokenizer(full_model_dir: Path) -> BiCodecTokenizer:
    return BiCodecTokenizer.load(full_model_dir)


def test_the_full_model_has_exactly_the_tokenizer_tensors(
    full_model_dir: Path, full_tokenizer: BiCodecTokenizer
) -> None:
    written = fold_weight_norm(load_file(full_model_dir / "BiCodec" / "model.safetensors"))
    # The file holds the decoder's half too (the official file does); the tokenizer's half:
    written = {k: v for k, v in written.items() if not k.startswith(UNUSED_BICODEC_PREFIXES)}
    expected = BiCodecModel(full_tokenizer.config.audio_tokenizer).state_dict()
    assert {k: v.shape for k, v in written.items()} == {k: v.shape for k, v in expected.items()}
    layers = full_tokenizer.semantic.encoder.layers
    assert len(layers) == 16 and full_tokenizer.semantic.encoder.layer_norm is None
    assert layers[0].attention.q_proj.weight.shape == (1024, 1024)


def test_the_full_model_tokenizes_like_the_reference(
    full_model_dir: Path, full_tokenizer: BiCodecTokenizer
) -> None:
    data = encode(speech_like(4.0, 24000, seed=5), 24000, "MP3")
    ref_global, ref_semantic = Reference(full_model_dir).tokens(data)
    ours = full_tokenizer.tokenize([full_tokenizer.prepare(data)])[0]
    assert ours.global_tokens == ref_global
    assert ours.semantic_tokens == ref_semantic
    assert len(set(ref_semantic)) > 10


def test_the_full_model_batch_matches_single_clips(full_tokenizer: BiCodecTokenizer) -> None:
    # The full encoder's stacked convolutions reach ~1 s into padding when it is not zeroed.
    wavs = [
        speech_like(s, 16000, seed=10 + i).astype("float32") for i, s in enumerate([2.0, 0.9, 0.5])
    ]
    alone = [full_tokenizer.tokenize([w])[0] for w in wavs]
    batched = full_tokenizer.tokenize(wavs)
    assert batched == alone  # exactly: the same kernels run on each clip's own frames


def test_the_full_model_passes_the_pre_run_check(full_model_dir: Path) -> None:
    check_model_dir(full_model_dir)  # headers, and the 1.2 GB .bin listed in a subprocess

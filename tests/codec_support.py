"""Test helpers for the tokenizer: speech-like audio, encoded files, and a reference-built model.

`write_reference_model` builds the model with the reference package's own classes (the
`spark-tts-lib` dev dependency), so the layout under test is the official one, not ours.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

from tartok_tui.codec import random_model


def speech_like(seconds: float, sr: int = 16000, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """A voiced-speech-like float64 signal: gliding f0 harmonics through moving formants,
    a syllable-rate envelope and breath noise. Different seeds give different 'speakers'."""
    rng = np.random.default_rng(seed)
    n = max(1, round(seconds * sr))
    t = np.arange(n) / sr
    f0_base = rng.uniform(90, 230)
    f0 = f0_base * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 1.2) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    formants = rng.uniform([400, 1100, 2300], [900, 1900, 3200])
    wobble = 1 + 0.2 * np.sin(2 * np.pi * rng.uniform(1.5, 4) * t[:, None] + rng.uniform(0, 6, 3))
    x = np.zeros(n)
    for h in range(1, 30):
        freq = h * f0
        gain = sum(
            np.exp(-(((freq - f * w) / 180.0) ** 2))
            for f, w in zip(formants, wobble.T, strict=True)
        )
        x += (gain + 0.02) * np.sin(h * phase) / h**0.5
    syllables = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 5.5) * t + rng.uniform(0, 6)))
    x = x * (0.15 + syllables) + 0.05 * rng.standard_normal(n) * syllables
    x = x / (np.max(np.abs(x)) + 1e-9) * level
    return x


def encode(audio: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> bytes:
    """Audio (N,) or (N, C) float -> file bytes in `fmt` (WAV, FLAC, OGG, MP3)."""
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _randomise(state: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value
        elif key.startswith("mel_transformer."):
            out[key] = value.clone()  # the filterbank and window are constants, not weights
        else:
            out[key] = random_model._init(key, value.shape, gen)
    return out


def write_reference_model(root: Path, seed: int = 1) -> Path:
    """A tiny random-weight model dir built with the reference package's BiCodec and
    transformers' pre-training wav2vec2, saved with the official (old-style) key names."""
    from safetensors.torch import save_file
    from spark_tts_lib.models.bicodec import BiCodec
    from spark_tts_lib.modules.encoder_decoder.feat_decoder import Decoder
    from spark_tts_lib.modules.encoder_decoder.feat_encoder import Encoder
    from spark_tts_lib.modules.encoder_decoder.wave_generator import WaveGenerator
    from spark_tts_lib.modules.speaker.speaker_encoder import SpeakerEncoder
    from spark_tts_lib.modules.vq.factorized_vector_quantize import FactorizedVectorQuantize
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    section, w2v = random_model._tiny_configs()
    gen = torch.Generator().manual_seed(seed)
    model = BiCodec(
        mel_params=section["mel_params"],
        encoder=Encoder(**section["encoder"]),
        decoder=WaveGenerator(**section["decoder"]),
        quantizer=FactorizedVectorQuantize(**section["quantizer"]),
        speaker_encoder=SpeakerEncoder(**section["speaker_encoder"]),
        prenet=Decoder(**section["prenet"]),
        postnet=Decoder(**section["postnet"]),
    )
    state = _randomise(model.state_dict(), gen)
    state["speaker_encoder.quantizer.project_in.weight"] *= random_model.SPEAKER_PROJECT_IN_SCALE
    renamed = {}
    for key, value in state.items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        key = key.replace(".parametrizations.weight.original1", ".weight_v")
        renamed[key] = value.contiguous()

    (root / "BiCodec").mkdir(parents=True, exist_ok=True)
    (root / "wav2vec2-large-xlsr-53").mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(random_model.TOP_CONFIG))
    (root / "BiCodec" / "config.yaml").write_text(yaml.safe_dump({"audio_tokenizer": section}))
    save_file(renamed, root / "BiCodec" / "model.safetensors")

    config = Wav2Vec2Config(**w2v)
    pretraining = Wav2Vec2ForPreTraining(config)
    w2v_state = _randomise(pretraining.state_dict(), gen)
    w2v_state = {
        k.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        ): v
        for k, v in w2v_state.items()
    }
    torch.save(w2v_state, root / "wav2vec2-large-xlsr-53" / "pytorch_model.bin")
    (root / "wav2vec2-large-xlsr-53" / "config.json").write_text(json.dumps(w2v, indent=2))
    (root / "wav2vec2-large-xlsr-53" / "preprocessor_config.json").write_text(
        json.dumps(random_model.PREPROCESSOR, indent=2)
    )
    return root


class Reference:
    """The official tokenizer (reference package), one clip at a time, as flat lists."""

    def __init__(self, model_dir: Path) -> None:
        from spark_tts_lib.models.audio_tokenizer import BiCodecTokenizer as RefTokenizer

        self.tokenizer = RefTokenizer(str(model_dir), torch.device("cpu"))

    def tokens(self, data: bytes) -> tuple[list[int], list[int]]:
        g, s = self.tokenizer.tokenize(io.BytesIO(data))
        return g.flatten().tolist(), s.flatten().tolist()

"""Write a random-weight model dir in the official layout and key names (no Spark-TTS needed).

"full" has the real architecture (BiCodec/config.yaml and xlsr-53 config values); "tiny" keeps
the layout and key names but is small enough to load and tokenize in well under a second on
a CPU. Both halves of BiCodec are written under the official names: the tokenizer's, and the
decoder's (prenet, wave generator, the token embeddings' projections, and the postnet, which
the official file carries though decoding never runs it).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import yaml

from tartok_tui.codec.model_dir import BICODEC_DIR, WAV2VEC2_DIR
from tartok_tui.codec.wav2vec_config import Wav2Vec2Settings

# Random init puts nearly every clip's speaker latents in the same FSQ cell; scaling the FSQ
# input projection spreads them so that global tokens differ between clips.
SPEAKER_PROJECT_IN_SCALE = 10.0

TOP_CONFIG = {
    "highpass_cutoff_freq": 40,
    "sample_rate": 16000,
    "segment_duration": 2.4,
    "max_val_duration": 12,
    "latent_hop_length": 320,
    "ref_segment_duration": 6,
    "volume_normalize": True,
}

FULL_AUDIO_TOKENIZER: dict[str, dict[str, object]] = {
    "mel_params": {
        "sample_rate": 16000,
        "n_fft": 1024,
        "win_length": 640,
        "hop_length": 320,
        "mel_fmin": 10,
        "mel_fmax": None,
        "num_mels": 128,
    },
    "encoder": {
        "input_channels": 1024,
        "vocos_dim": 384,
        "vocos_intermediate_dim": 2048,
        "vocos_num_layers": 12,
        "out_channels": 1024,
        "sample_ratios": [1, 1],
    },
    "decoder": {
        "input_channel": 1024,
        "channels": 1536,
        "rates": [8, 5, 4, 2],
        "kernel_sizes": [16, 11, 8, 4],
    },
    "quantizer": {
        "input_dim": 1024,
        "codebook_size": 8192,
        "codebook_dim": 8,
        "commitment": 0.25,
        "codebook_loss_weight": 2.0,
        "use_l2_normlize": True,
        "threshold_ema_dead_code": 0.2,
    },
    "speaker_encoder": {
        "input_dim": 128,
        "out_dim": 1024,
        "latent_dim": 128,
        "token_num": 32,
        "fsq_levels": [4, 4, 4, 4, 4, 4],
        "fsq_num_quantizers": 1,
    },
    "prenet": {
        "input_channels": 1024,
        "vocos_dim": 384,
        "vocos_intermediate_dim": 2048,
        "vocos_num_layers": 12,
        "out_channels": 1024,
        "condition_dim": 1024,
        "sample_ratios": [1, 1],
        "use_tanh_at_final": False,
    },
    "postnet": {
        "input_channels": 1024,
        "vocos_dim": 384,
        "vocos_intermediate_dim": 2048,
        "vocos_num_layers": 6,
        "out_channels": 1024,
        "use_tanh_at_final": False,
    },
}

FULL_WAV2VEC2 = {
    "architectures": ["Wav2Vec2ForPreTraining"],
    "model_type": "wav2vec2",
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "feat_extract_norm": "layer",
    "feat_extract_activation": "gelu",
    "conv_dim": [512] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": True,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": True,
    "vocab_size": 32,
}

PREPROCESSOR = {
    "do_normalize": True,
    "feature_extractor_type": "Wav2Vec2FeatureExtractor",
    "feature_size": 1,
    "padding_side": "right",
    "padding_value": 0,
    "return_attention_mask": True,
    "sampling_rate": 16000,
}


def _tiny_configs() -> tuple[dict[str, dict[str, object]], dict[str, object]]:
    section = copy.deepcopy(FULL_AUDIO_TOKENIZER)
    section["mel_params"]["num_mels"] = 32
    section["encoder"].update(
        input_channels=32,
        vocos_dim=32,
        vocos_intermediate_dim=64,
        vocos_num_layers=2,
        out_channels=32,
    )
    section["quantizer"]["input_dim"] = 32
    section["speaker_encoder"].update(input_dim=32, out_dim=32, latent_dim=32)
    for part in ("prenet", "postnet"):
        section[part].update(
            input_channels=32,
            vocos_dim=32,
            vocos_intermediate_dim=64,
            vocos_num_layers=1,
            out_channels=32,
        )
    section["prenet"]["condition_dim"] = 32
    section["decoder"].update(input_channel=32, channels=32)
    w2v = dict(FULL_WAV2VEC2)
    # hidden_states[16] must exist, so 16 layers; everything else as small as it goes.
    w2v.update(
        hidden_size=32,
        num_hidden_layers=16,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=[32] * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    return section, w2v


def _init(key: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """A random tensor that keeps activations in a sane range for the role `key` suggests."""
    name = key.rsplit(".", 1)[-1]
    if name == "num_batches_tracked":
        return torch.zeros((), dtype=torch.long)
    if name == "running_var":
        return 0.5 + torch.rand(shape, generator=gen)
    if name == "running_mean":
        return 0.1 * torch.randn(shape, generator=gen)
    if name == "alpha":  # Snake frequencies: positive, near the official init of 1
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    if name == "gamma":  # ConvNeXt layer scale, RMSNorm gain
        return (0.3 if "convnext" in key else 1.0) + 0.05 * torch.randn(shape, generator=gen)
    if name == "bias":
        return 0.05 * torch.randn(shape, generator=gen)
    if len(shape) == 1:  # norm gains
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    fan_in = max(1, int(torch.tensor(shape[1:]).prod().item()))
    return torch.randn(shape, generator=gen) / fan_in**0.5


def _weight_norm_split(weight: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, v) of old-style weight norm such that g * v / ||v|| reproduces `weight`."""
    return torch.norm_except_dim(weight, 2, dim), weight.clone()


def _weight_normed(key: str, shape: torch.Size) -> bool:
    """Whether the official file stores ``key`` as a weight-norm pair: the quantizer's
    projections and every conv of the wave generator."""
    if key in ("quantizer.in_project.weight", "quantizer.out_project.weight"):
        return True
    return key.startswith("decoder.") and key.endswith(".weight") and len(shape) == 3


def bicodec_state(section: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random BiCodec tensors (tokenizer and decoder halves) under the official key names."""
    from tartok_tui.codec.decoder import BiCodecDecoder
    from tartok_tui.codec.feature_decoder import FeatureDecoder
    from tartok_tui.codec.speaker import mel_transform
    from tartok_tui.codec.tokenizer import BiCodecModel

    shapes = {k: v.shape for k, v in BiCodecModel(section).state_dict().items()}
    with torch.device("meta"):  # shapes only: no random init of the decoder's ~100M values
        decoder = dict(BiCodecDecoder(section).state_dict())
        postnet = FeatureDecoder.from_config(section["postnet"]).state_dict()
    decoder.update({f"postnet.{k}": v for k, v in postnet.items()})
    mel = mel_transform(section["mel_params"]).state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if key.startswith("mel_transformer."):
            state[key] = mel[key.removeprefix("mel_transformer.")].clone()
            continue
        state[key] = _init(key, shape, gen)
    # A generator of its own: the tokenizer's tensors (and the wav2vec2 tensors drawn after
    # them) stay what they were before the decoder half was written.
    decoder_gen = torch.Generator().manual_seed(gen.initial_seed() + 1)
    for key, tensor in decoder.items():
        if key not in state:
            state[key] = _init(key, tensor.shape, decoder_gen)
    state["speaker_encoder.quantizer.project_in.weight"] *= SPEAKER_PROJECT_IN_SCALE
    for key in [k for k, v in state.items() if _weight_normed(k, v.shape)]:
        g, v = _weight_norm_split(state.pop(key), 0)
        base = key.removesuffix(".weight")
        state[f"{base}.weight_g"] = g
        state[f"{base}.weight_v"] = v
    return state


def wav2vec2_state(config: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random wav2vec2 tensors named as the official pre-training checkpoint names them."""
    from tartok_tui.codec.wav2vec import SemanticFeatures

    where = Path("config.json")
    cfg = Wav2Vec2Settings.from_dict(config, where)
    front_cfg = Wav2Vec2Settings.from_dict(
        {**config, "num_hidden_layers": max(SemanticFeatures.LAYERS)}, where
    )
    with torch.device("meta"):
        front = SemanticFeatures(front_cfg).state_dict()
    shapes = {k: v.shape for k, v in front.items() if not k.startswith("encoder.layers.")}
    layer = {
        k.removeprefix("encoder.layers.0."): v.shape
        for k, v in front.items()
        if k.startswith("encoder.layers.0.")
    }
    for i in range(cfg.num_hidden_layers):
        shapes.update({f"encoder.layers.{i}.{k}": s for k, s in layer.items()})
    shapes["encoder.layer_norm.weight"] = torch.Size([cfg.hidden_size])
    shapes["encoder.layer_norm.bias"] = torch.Size([cfg.hidden_size])
    shapes["masked_spec_embed"] = torch.Size([cfg.hidden_size])
    state = {f"wav2vec2.{k}": _init(k, s, gen) for k, s in shapes.items()}
    state["wav2vec2.masked_spec_embed"] = torch.rand(cfg.hidden_size, generator=gen)
    # The positional conv is weight-normed over the kernel axis (dim 2), stored old-style.
    g, v = _weight_norm_split(state.pop("wav2vec2.encoder.pos_conv_embed.conv.weight"), 2)
    state["wav2vec2.encoder.pos_conv_embed.conv.weight_g"] = g
    state["wav2vec2.encoder.pos_conv_embed.conv.weight_v"] = v
    return state


def write_random_model(path: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight model dir ("tiny" or "full") at `path`; returns `path`."""
    if preset == "full":
        section, w2v = copy.deepcopy(FULL_AUDIO_TOKENIZER), dict(FULL_WAV2VEC2)
    elif preset == "tiny":
        section, w2v = _tiny_configs()
    else:
        raise ValueError(f"preset must be 'tiny' or 'full', got {preset!r}")
    from safetensors.torch import save_file

    root = Path(path)
    (root / BICODEC_DIR).mkdir(parents=True, exist_ok=True)
    (root / WAV2VEC2_DIR).mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    (root / "config.yaml").write_text(yaml.safe_dump(TOP_CONFIG, sort_keys=False))
    (root / BICODEC_DIR / "config.yaml").write_text(
        yaml.safe_dump({"audio_tokenizer": section}, sort_keys=False)
    )
    bicodec = {k: v.contiguous() for k, v in bicodec_state(section, gen).items()}
    save_file(bicodec, root / BICODEC_DIR / "model.safetensors")
    (root / WAV2VEC2_DIR / "config.json").write_text(json.dumps(w2v, indent=2))
    (root / WAV2VEC2_DIR / "preprocessor_config.json").write_text(
        json.dumps(PREPROCESSOR, indent=2)
    )
    torch.save(wav2vec2_state(w2v, gen), root / WAV2VEC2_DIR / "pytorch_model.bin")
    return root

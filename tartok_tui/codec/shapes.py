"""The tensor names and shapes the tokenizer's modules have, computed from the configs alone.

Plain Python, so that a model dir can be checked in a process that never imports torch (the
supervisor, before any worker starts). tests/test_model_check.py holds these equal to the
modules' own state dicts.
"""

from __future__ import annotations

from tartok_tui.codec.wav2vec_config import Wav2Vec2Settings

Shape = tuple[int, ...]
Shapes = dict[str, Shape]

ECAPA = 512
"""ECAPA-TDNN channels, fixed in the official speaker encoder (see speaker.py)."""
RES2_SCALE = 8
SE_BOTTLENECK = 128
PERCEIVER_DEPTH = 2
PERCEIVER_INNER = 8 * 64
"""Cross-attention heads x head dim."""


def _linear(out: Shapes, name: str, c_in: int, c_out: int, bias: bool = True) -> None:
    out[f"{name}.weight"] = (c_out, c_in)
    if bias:
        out[f"{name}.bias"] = (c_out,)


def _conv(
    out: Shapes, name: str, c_in: int, c_out: int, kernel: int, groups: int = 1, bias: bool = True
) -> None:
    out[f"{name}.weight"] = (c_out, c_in // groups, kernel)
    if bias:
        out[f"{name}.bias"] = (c_out,)


def _layer_norm(out: Shapes, name: str, c: int) -> None:
    out[f"{name}.weight"] = (c,)
    out[f"{name}.bias"] = (c,)


def _batch_norm(out: Shapes, name: str, c: int) -> None:
    for part in ("weight", "bias", "running_mean", "running_var"):
        out[f"{name}.{part}"] = (c,)
    out[f"{name}.num_batches_tracked"] = ()


def _vocos(out: Shapes, name: str, c_in: int, dim: int, inner: int, layers: int) -> None:
    _conv(out, f"{name}.embed", c_in, dim, 7)
    _layer_norm(out, f"{name}.norm", dim)
    for i in range(layers):
        block = f"{name}.convnext.{i}"
        out[f"{block}.gamma"] = (dim,)
        _conv(out, f"{block}.dwconv", dim, dim, 7, groups=dim)
        _layer_norm(out, f"{block}.norm", dim)
        _linear(out, f"{block}.pwconv1", dim, inner)
        _linear(out, f"{block}.pwconv2", inner, dim)
    _layer_norm(out, f"{name}.final_layer_norm", dim)


def _speaker(out: Shapes, name: str, mels: int, dim: int, latents: int, levels: int) -> None:
    ecapa = f"{name}.speaker_encoder"
    _conv(out, f"{ecapa}.layer1.conv", mels, ECAPA, 5)
    _batch_norm(out, f"{ecapa}.layer1.bn", ECAPA)
    width = ECAPA // RES2_SCALE
    for layer in (2, 3, 4):
        block = f"{ecapa}.layer{layer}.se_res2block"
        for i in (0, 2):
            _conv(out, f"{block}.{i}.conv", ECAPA, ECAPA, 1)
            _batch_norm(out, f"{block}.{i}.bn", ECAPA)
        for i in range(RES2_SCALE - 1):
            _conv(out, f"{block}.1.convs.{i}", width, width, 3)
            _batch_norm(out, f"{block}.1.bns.{i}", width)
        _linear(out, f"{block}.3.linear1", ECAPA, SE_BOTTLENECK)
        _linear(out, f"{block}.3.linear2", SE_BOTTLENECK, ECAPA)
    _conv(out, f"{ecapa}.conv", 3 * ECAPA, 3 * ECAPA, 1)
    perceiver = f"{name}.perceiver_sampler"
    out[f"{perceiver}.latents"] = (latents, dim)
    _linear(out, f"{perceiver}.proj_context", 3 * ECAPA, dim)
    inner = int(dim * 4 * 2 / 3)
    for i in range(PERCEIVER_DEPTH):
        prefix = f"{perceiver}.layers.{i}"
        _linear(out, f"{prefix}.0.to_q", dim, PERCEIVER_INNER, bias=False)
        _linear(out, f"{prefix}.0.to_kv", dim, 2 * PERCEIVER_INNER, bias=False)
        _linear(out, f"{prefix}.0.to_out", PERCEIVER_INNER, dim, bias=False)
        _linear(out, f"{prefix}.1.0", dim, 2 * inner)
        _linear(out, f"{prefix}.1.2", inner, dim)
    out[f"{perceiver}.norm.gamma"] = (dim,)
    _linear(out, f"{name}.quantizer.project_in", dim, levels)


def bicodec_shapes(section: dict) -> Shapes:
    """BiCodecModel's state dict shapes for an `audio_tokenizer` config section.
    KeyError/TypeError/ValueError when the section lacks or mistypes a value."""
    out: Shapes = {}
    enc = section["encoder"]
    dim, inner = int(enc["vocos_dim"]), int(enc["vocos_intermediate_dim"])
    _vocos(
        out, "encoder.encoder", int(enc["input_channels"]), dim, inner, int(enc["vocos_num_layers"])
    )
    for j in range(len(enc.get("sample_ratios", [1, 1]))):
        _vocos(out, f"encoder.downsample.{j}.1", dim, dim, inner, 2)
    _linear(out, "encoder.project", dim, int(enc["out_channels"]))
    q = section["quantizer"]
    _conv(out, "quantizer.in_project", int(q["input_dim"]), int(q["codebook_dim"]), 1)
    out["quantizer.codebook.weight"] = (int(q["codebook_size"]), int(q["codebook_dim"]))
    spk = section["speaker_encoder"]
    _speaker(
        out,
        "speaker_encoder",
        int(spk["input_dim"]),
        int(spk["latent_dim"]),
        int(spk["token_num"]),
        len(spk["fsq_levels"]),
    )
    mel = section["mel_params"]
    out["mel_transformer.spectrogram.window"] = (int(mel["win_length"]),)
    out["mel_transformer.mel_scale.fb"] = (int(mel["n_fft"]) // 2 + 1, int(mel["num_mels"]))
    return out


def wav2vec2_shapes(settings: Wav2Vec2Settings, num_layers: int) -> Shapes:
    """SemanticFeatures' state dict shapes: wav2vec2 up to `num_layers` layers."""
    out: Shapes = {}
    dims = (1, *settings.conv_dim)
    for i, kernel in enumerate(settings.conv_kernel):
        layer = f"feature_extractor.conv_layers.{i}"
        _conv(out, f"{layer}.conv", dims[i], dims[i + 1], kernel, bias=settings.conv_bias)
        _layer_norm(out, f"{layer}.layer_norm", dims[i + 1])
    hidden = settings.hidden_size
    _layer_norm(out, "feature_projection.layer_norm", dims[-1])
    _linear(out, "feature_projection.projection", dims[-1], hidden)
    _conv(
        out,
        "encoder.pos_conv_embed.conv",
        hidden,
        hidden,
        settings.num_conv_pos_embeddings,
        groups=settings.num_conv_pos_embedding_groups,
    )
    for i in range(num_layers):
        layer = f"encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _linear(out, f"{layer}.attention.{proj}", hidden, hidden)
        _layer_norm(out, f"{layer}.layer_norm", hidden)
        _linear(out, f"{layer}.feed_forward.intermediate_dense", hidden, settings.intermediate_size)
        _linear(out, f"{layer}.feed_forward.output_dense", settings.intermediate_size, hidden)
        _layer_norm(out, f"{layer}.final_layer_norm", hidden)
    if settings.num_hidden_layers == num_layers:
        _layer_norm(out, "encoder.layer_norm", hidden)
    return out

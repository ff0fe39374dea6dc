"""Validate and load a model dir in the official Spark-TTS layout (the tokenizer's files;
the decoder half of the BiCodec weights is read by codec/decoder.py through the same checks).

    config.yaml                         sample_rate, ref_segment_duration, latent_hop_length, volume_normalize
    BiCodec/config.yaml                 section `audio_tokenizer`
    BiCodec/model.safetensors           weight-normed convs stored as `weight_g` / `weight_v`
    wav2vec2-large-xlsr-53/             config.json, preprocessor_config.json, pytorch_model.bin or model.safetensors

Anything missing, a tensor key we need that is absent, a key nobody knows, or a wrong shape is
a ModelDirError naming the file and the key: a partly random model would tokenize silently wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from tartok_tui.codec.errors import ModelDirError
from tartok_tui.codec.wav2vec_config import Wav2Vec2Settings

if TYPE_CHECKING:  # torch is imported where tensors are loaded: the supervisor reads
    import torch  # configs only and never pays for it

    from tartok_tui.codec.wav2vec import SemanticFeatures

BICODEC_DIR = "BiCodec"
WAV2VEC2_DIR = "wav2vec2-large-xlsr-53"
WAV2VEC2_WEIGHTS = ("pytorch_model.bin", "model.safetensors")

_V = TypeVar("_V")

# Keys of the official BiCodec file that the tokenizer never reads: the decoder side (read by
# codec/decoder.py), and the heads of the speaker encoder that produce the d-vector rather
# than the tokens.
UNUSED_BICODEC_PREFIXES = (
    "decoder.",
    "prenet.",
    "postnet.",
    "quantizer.out_project.",
    "quantizer.cluster_size",
    "speaker_encoder.project.",
    "speaker_encoder.quantizer.project_out.",
    "speaker_encoder.speaker_encoder.pool.",
    "speaker_encoder.speaker_encoder.bn.",
    "speaker_encoder.speaker_encoder.bn2.",
    "speaker_encoder.speaker_encoder.linear.",
)
# The official wav2vec2 file was saved from a pre-training model; its heads are not used.
PRETRAINING_HEADS = ("quantizer.", "project_q.", "project_hid.", "lm_head.", "dropout_features")
# Buffers the official file may carry; recomputed from the config when absent.
OPTIONAL_BICODEC_KEYS = ("mel_transformer.spectrogram.window", "mel_transformer.mel_scale.fb")


@dataclass(frozen=True)
class ModelDirConfig:
    root: Path
    sample_rate: int
    ref_segment_duration: float
    latent_hop_length: int
    volume_normalize: bool
    audio_tokenizer: dict

    @property
    def ref_segment_length(self) -> int:
        """Reference clip length in samples, a whole number of hops (96000 for the official)."""
        n = int(self.sample_rate * self.ref_segment_duration)
        return n // self.latent_hop_length * self.latent_hop_length


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ModelDirError("file is missing", path)
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"not valid YAML: {exc}", path) from exc
    if not isinstance(data, dict):
        raise ModelDirError("expected a mapping at the top level", path)
    return data


def _need(mapping: dict, key: str, path: Path, prefix: str = "") -> Any:
    """The value of a YAML key, of whatever type the file gave it."""
    if key not in mapping:
        raise ModelDirError("config key is missing", path, prefix + key)
    return mapping[key]


def read_config(root: Path) -> ModelDirConfig:
    """Read and check both YAML configs and that every weight file is present."""
    root = Path(root)
    if not root.is_dir():
        raise ModelDirError("not a directory", root)
    top_path = root / "config.yaml"
    top = _read_yaml(top_path)
    bicodec_path = root / BICODEC_DIR / "config.yaml"
    section = _need(_read_yaml(bicodec_path), "audio_tokenizer", bicodec_path)
    if not isinstance(section, dict):
        raise ModelDirError("expected a mapping", bicodec_path, "audio_tokenizer")
    for part in ("mel_params", "encoder", "quantizer", "speaker_encoder"):
        if not isinstance(_need(section, part, bicodec_path, "audio_tokenizer."), dict):
            raise ModelDirError("expected a mapping", bicodec_path, f"audio_tokenizer.{part}")
    if not (root / BICODEC_DIR / "model.safetensors").is_file():
        raise ModelDirError("file is missing", root / BICODEC_DIR / "model.safetensors")
    w2v = root / WAV2VEC2_DIR
    for name in ("config.json", "preprocessor_config.json"):
        if not (w2v / name).is_file():
            raise ModelDirError("file is missing", w2v / name)
    if not any((w2v / name).is_file() for name in WAV2VEC2_WEIGHTS):
        raise ModelDirError(f"file is missing (one of {', '.join(WAV2VEC2_WEIGHTS)})", w2v)
    cfg = ModelDirConfig(
        root=root,
        sample_rate=int(_need(top, "sample_rate", top_path)),
        ref_segment_duration=float(_need(top, "ref_segment_duration", top_path)),
        latent_hop_length=int(_need(top, "latent_hop_length", top_path)),
        volume_normalize=bool(top.get("volume_normalize", True)),
        audio_tokenizer=section,
    )
    mel_rate = int(_need(section["mel_params"], "sample_rate", bicodec_path, "mel_params."))
    if mel_rate != cfg.sample_rate:
        raise ModelDirError(
            f"mel sample rate {mel_rate} != model sample rate {cfg.sample_rate}",
            bicodec_path,
            "audio_tokenizer.mel_params.sample_rate",
        )
    return cfg


def _weight_norm_dim(magnitude: torch.Tensor) -> int:
    """The dim a weight norm keeps: the one axis where the magnitude is not 1 (BiCodec's
    convs: 0; wav2vec2's positional conv: 2, one magnitude per kernel tap)."""
    kept = [d for d, n in enumerate(magnitude.shape) if n != 1]
    return kept[0] if len(kept) == 1 else 0


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace `X.weight_g` + `X.weight_v` (or the parametrized names) by plain `X.weight`."""
    import torch

    out: dict[str, torch.Tensor] = {}
    pairs = {
        ".weight_g": ".weight_v",
        ".parametrizations.weight.original0": ".parametrizations.weight.original1",
    }
    consumed: set[str] = set()
    for key, tensor in state.items():
        for g_suffix, v_suffix in pairs.items():
            if key.endswith(g_suffix):
                base = key[: -len(g_suffix)]
                v_key = base + v_suffix
                if v_key not in state:
                    raise ModelDirError("weight-norm magnitude without direction", None, key)
                # Same kernel the official model uses to rebuild the weight, so bits match.
                out[base + ".weight"] = torch._weight_norm(
                    state[v_key], tensor, _weight_norm_dim(tensor)
                )
                consumed.update((key, v_key))
    for key, tensor in state.items():
        if key in consumed:
            continue
        if key.endswith((".weight_v", ".parametrizations.weight.original1")):
            raise ModelDirError("weight-norm direction without magnitude", None, key)
        out[key] = tensor
    return out


def check_shapes(
    expected: Mapping[str, Sequence[int]],
    actual: Mapping[str, Sequence[int]],
    file: Path,
    *,
    unused_prefixes: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> None:
    """ModelDirError naming the first key that is missing, unexpected or misshapen."""
    unexpected = [k for k in actual if k not in expected and not k.startswith(unused_prefixes)]
    for key, shape in expected.items():
        if key not in actual:
            if key in optional:
                continue
            hint = f" (the file has an unexpected {unexpected[0]!r})" if unexpected else ""
            raise ModelDirError(f"tensor is missing{hint}", file, key)
        if tuple(actual[key]) != tuple(shape):
            raise ModelDirError(f"shape {tuple(actual[key])} != expected {tuple(shape)}", file, key)
    if unexpected:
        raise ModelDirError("unexpected tensor (not part of this model)", file, unexpected[0])


def check_state(
    expected: dict[str, torch.Size],
    state: dict[str, torch.Tensor],
    file: Path,
    *,
    unused_prefixes: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """The tensors of `state` that `expected` names; ModelDirError on any mismatch."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    check_shapes(expected, shapes, file, unused_prefixes=unused_prefixes, optional=optional)
    return {k: v for k, v in state.items() if k in expected}


def wav2vec2_key(key: str, num_layers: int) -> str | None:
    """Our name for a key of the wav2vec2 file, or None for one the tokenizer never reads:
    the official file was saved from a pre-training model (names prefixed `wav2vec2.`,
    pre-training heads), and layers past the last hidden state read are not needed."""
    if key.startswith(PRETRAINING_HEADS):
        return None
    name = key.removeprefix("wav2vec2.")
    parts = name.split(".")
    if name.startswith("encoder.layers.") and parts[2].isdigit() and int(parts[2]) >= num_layers:
        return None
    return name


def wav2vec2_weights(cfg: ModelDirConfig) -> Path:
    """The wav2vec2 weights file (the first of WAV2VEC2_WEIGHTS present)."""
    folder = cfg.root / WAV2VEC2_DIR
    return next(folder / n for n in WAV2VEC2_WEIGHTS if (folder / n).is_file())


def wav2vec2_entries(entries: Mapping[str, _V], num_layers: int) -> dict[str, _V]:
    """The entries of the wav2vec2 file the tokenizer reads, under our names."""
    ours = {}
    for key, value in entries.items():
        name = wav2vec2_key(key, num_layers)
        if name is not None:
            ours[name] = value
    return ours


def wav2vec2_unused(settings: Wav2Vec2Settings, num_layers: int) -> tuple[str, ...]:
    """Prefixes of wav2vec2 tensors that may be in the file but are not read."""
    unused: tuple[str, ...] = ("masked_spec_embed",)
    if settings.num_hidden_layers > num_layers:
        # The final layer norm is read only when no layer follows the last one used.
        unused += ("encoder.layer_norm.",)
    return unused


def load_bicodec_state(
    cfg: ModelDirConfig,
    expected: dict[str, torch.Size],
    unused_prefixes: tuple[str, ...] = UNUSED_BICODEC_PREFIXES,
) -> dict[str, torch.Tensor]:
    """BiCodec tensors, weight norm folded, checked against `expected` shapes; keys under
    `unused_prefixes` may be in the file and are not read (by default: the tokenizer's
    view of the file; the decoder passes its own)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = cfg.root / BICODEC_DIR / "model.safetensors"
    try:
        raw = load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelDirError(f"cannot read safetensors: {exc}", path) from exc
    try:
        state = fold_weight_norm(raw)
    except ModelDirError as exc:
        raise ModelDirError(exc.message, path, exc.key) from exc
    return check_state(
        expected,
        state,
        path,
        unused_prefixes=unused_prefixes,
        optional=OPTIONAL_BICODEC_KEYS,
    )


def read_wav2vec2_settings(cfg: ModelDirConfig, num_layers: int) -> Wav2Vec2Settings:
    """The wav2vec2 config, checked to be the architecture and depth the tokenizer reads."""
    config_path = cfg.root / WAV2VEC2_DIR / "config.json"
    settings = Wav2Vec2Settings.read(config_path)
    if not settings.do_stable_layer_norm or settings.feat_extract_norm != "layer":
        raise ModelDirError(
            "expected the stable-layer-norm wav2vec2 (xlsr-53) architecture",
            config_path,
            "do_stable_layer_norm",
        )
    if settings.num_hidden_layers < num_layers:
        raise ModelDirError(
            f"{settings.num_hidden_layers} layers, the tokenizer reads hidden state {num_layers}",
            config_path,
            "num_hidden_layers",
        )
    return settings


def check_configs(cfg: ModelDirConfig, settings: Wav2Vec2Settings) -> None:
    """What the two halves must agree on, and what the tokenizer supports."""
    if cfg.sample_rate != 16000 or cfg.latent_hop_length != 320:
        raise ModelDirError(
            "only 16 kHz models with a 320-sample hop are supported",
            cfg.root / "config.yaml",
            "sample_rate",
        )
    encoder = cfg.audio_tokenizer["encoder"]
    if encoder.get("input_channels") != settings.hidden_size:
        raise ModelDirError(
            f"encoder input_channels != wav2vec2 hidden_size {settings.hidden_size}",
            cfg.root / BICODEC_DIR / "config.yaml",
            "audio_tokenizer.encoder.input_channels",
        )


def _read_tensors(weights: Path) -> dict[str, torch.Tensor]:
    """All tensors of a wav2vec2 weights file, mapped from the file (not yet copied)."""
    import torch

    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(weights)
        state = torch.load(weights, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # a corrupt file fails in many ways; all mean "unreadable"
        raise ModelDirError(f"cannot read weights: {exc}", weights) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelDirError("cannot read weights: not a dict of tensors", weights)
    return state


def load_wav2vec2(
    cfg: ModelDirConfig, num_layers: int, settings: Wav2Vec2Settings | None = None
) -> tuple[Wav2Vec2Settings, SemanticFeatures]:
    """(settings, SemanticFeatures loaded) for wav2vec2's first `num_layers` layers, read
    from the files (the settings too, unless the caller has read them already).

    The official file was saved from a pre-training model: names carry a `wav2vec2.`
    prefix, the pre-training heads are dropped, and the positional conv's weight norm
    (old `weight_g`/`weight_v` or parametrized names) is folded with the kernel the
    original model rebuilds it with, so the weight is the same to the bit.
    """
    import torch

    from tartok_tui.codec.wav2vec import SemanticFeatures

    config_path = cfg.root / WAV2VEC2_DIR / "config.json"
    if settings is None:
        settings = read_wav2vec2_settings(cfg, num_layers)
    weights = wav2vec2_weights(cfg)
    raw = wav2vec2_entries(_read_tensors(weights), num_layers)
    try:
        state = fold_weight_norm(raw)
    except ModelDirError as exc:
        raise ModelDirError(exc.message, weights, exc.key) from exc
    # Built without storage (random init of 300M parameters costs seconds), then given
    # the checked tensors themselves: strict, so every parameter is set.
    with torch.device("meta"):
        try:
            model = SemanticFeatures(settings)
        except ValueError as exc:
            raise ModelDirError(str(exc), config_path) from exc
    expected = {k: v.shape for k, v in model.state_dict().items()}
    unused = wav2vec2_unused(settings, num_layers)
    state = check_state(expected, state, weights, unused_prefixes=unused)
    # Copies of our own: the file is mapped, and a run must not depend on it staying
    # unchanged under it.
    owned = {k: v.detach().to(torch.float32, copy=True) for k, v in state.items()}
    model.load_state_dict(owned, strict=True, assign=True)
    return settings, model

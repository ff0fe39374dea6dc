"""Validate and load a model dir in the official Spark-TTS layout (tokenizer half only).

    config.yaml                         sample_rate, ref_segment_duration, latent_hop_length, volume_normalize
    BiCodec/config.yaml                 section `audio_tokenizer`
    BiCodec/model.safetensors           weight-normed convs stored as `weight_g` / `weight_v`
    wav2vec2-large-xlsr-53/             config.json, preprocessor_config.json, pytorch_model.bin or model.safetensors

Anything missing, a tensor key we need that is absent, a key nobody knows, or a wrong shape is
a ModelDirError naming the file and the key: a partly random model would tokenize silently wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:  # torch is imported where tensors are loaded: the supervisor reads
    import torch  # configs only and never pays for it

BICODEC_DIR = "BiCodec"
WAV2VEC2_DIR = "wav2vec2-large-xlsr-53"
WAV2VEC2_WEIGHTS = ("pytorch_model.bin", "model.safetensors")

# Keys of the official BiCodec file that the tokenizer never reads: the decoder side, and the
# heads of the speaker encoder that produce the d-vector rather than the tokens.
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


class ModelDirError(Exception):
    """The model dir is unusable; `file` and `key` say where."""

    def __init__(self, message: str, file: Path | str | None = None, key: str | None = None):
        where = f"{file}" if file is not None else ""
        if key is not None:
            where += f" [{key}]"
        super().__init__(f"{where}: {message}" if where else message)
        self.file = str(file) if file is not None else None
        self.key = key
        self.message = message


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


def _need(mapping: dict, key: str, path: Path, prefix: str = "") -> object:
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
                out[base + ".weight"] = torch._weight_norm(state[v_key], tensor, 0)
                consumed.update((key, v_key))
    for key, tensor in state.items():
        if key in consumed:
            continue
        if key.endswith((".weight_v", ".parametrizations.weight.original1")):
            raise ModelDirError("weight-norm direction without magnitude", None, key)
        out[key] = tensor
    return out


def check_state(
    expected: dict[str, torch.Size],
    state: dict[str, torch.Tensor],
    file: Path,
    *,
    unused_prefixes: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """The tensors of `state` that `expected` names; ModelDirError on any mismatch."""
    for key, shape in expected.items():
        if key not in state:
            if key in optional:
                continue
            raise ModelDirError("tensor is missing", file, key)
        if state[key].shape != shape:
            raise ModelDirError(
                f"shape {tuple(state[key].shape)} != expected {tuple(shape)}", file, key
            )
    for key in state:
        if key not in expected and not key.startswith(unused_prefixes):
            raise ModelDirError("unexpected tensor (not part of this model)", file, key)
    return {k: v for k, v in state.items() if k in expected}


def load_bicodec_state(
    cfg: ModelDirConfig, expected: dict[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """BiCodec tokenizer tensors, weight norm folded, checked against `expected` shapes."""
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
        unused_prefixes=UNUSED_BICODEC_PREFIXES,
        optional=OPTIONAL_BICODEC_KEYS,
    )


def _check_wav2vec2_shapes(weights: Path, config, num_layers: int) -> None:
    """Compare tensor shapes with what the config implies, naming the first wrong key.

    (transformers reports a mismatch with the submodule-local name only.)"""
    import torch

    from tartok_tui.codec.wav2vec import SemanticFeatures

    try:
        if weights.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(weights, "pt") as f:
                shapes = {k: torch.Size(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        else:
            state = torch.load(weights, map_location="cpu", mmap=True, weights_only=True)
            shapes = {k: v.shape for k, v in state.items()}
    except Exception as exc:  # a corrupt file fails in many ways; all mean "unreadable"
        raise ModelDirError(f"cannot read weights: {exc}", weights) from exc
    with torch.device("meta"):
        expected = {k: v.shape for k, v in SemanticFeatures(config).state_dict().items()}
    for key, shape in shapes.items():
        name = key.removeprefix("wav2vec2.").replace(".weight_v", ".weight")
        name = name.replace(".parametrizations.weight.original1", ".weight")
        if name in expected and expected[name] != shape:
            raise ModelDirError(
                f"shape {tuple(shape)} != expected {tuple(expected[name])}", weights, name
            )


def load_wav2vec2(cfg: ModelDirConfig, num_layers: int):
    """(transformers config, state dict) of wav2vec2's first `num_layers` layers.

    Loaded through `Wav2Vec2Model.from_pretrained`, which also reads the official file (saved
    from a pre-training model, old-style weight-norm names); the positional conv weight is
    returned folded.
    """
    from transformers import Wav2Vec2Config, Wav2Vec2Model
    from transformers.utils import logging as hf_logging

    path = cfg.root / WAV2VEC2_DIR
    config_path = path / "config.json"
    try:
        config = Wav2Vec2Config.from_pretrained(path)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"cannot read the wav2vec2 config: {exc}", config_path) from exc
    if not config.do_stable_layer_norm or config.feat_extract_norm != "layer":
        raise ModelDirError(
            "expected the stable-layer-norm wav2vec2 (xlsr-53) architecture",
            config_path,
            "do_stable_layer_norm",
        )
    if config.num_hidden_layers < num_layers:
        raise ModelDirError(
            f"{config.num_hidden_layers} layers, the tokenizer reads hidden state {num_layers}",
            config_path,
            "num_hidden_layers",
        )
    weights = next(path / n for n in WAV2VEC2_WEIGHTS if (path / n).is_file())
    _check_wav2vec2_shapes(weights, config, num_layers)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # unused pre-training heads are expected; checked below
    try:
        model, info = Wav2Vec2Model.from_pretrained(
            path,
            num_hidden_layers=num_layers,
            output_loading_info=True,
            attn_implementation="sdpa",
        )
    except (OSError, RuntimeError, ValueError) as exc:
        found = re.search(r"size mismatch for ([\w.]+)", str(exc))
        key = found.group(1) if found else None
        raise ModelDirError(f"cannot load wav2vec2: {exc}", weights, key) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    if info.get("mismatched_keys"):
        key, *_ = info["mismatched_keys"][0]
        raise ModelDirError("tensor has the wrong shape", weights, key)
    # The final layer norm is read only when the model has no layer beyond the last one used.
    unused = {"masked_spec_embed"}
    if config.num_hidden_layers > num_layers:
        unused |= {"encoder.layer_norm.weight", "encoder.layer_norm.bias"}
    needed_missing = [k for k in info.get("missing_keys", []) if k not in unused]
    for key in info.get("unexpected_keys", []):
        if key.startswith(PRETRAINING_HEADS):
            continue
        parts = key.split(".")
        if key.startswith("encoder.layers.") and int(parts[2]) >= num_layers:
            continue  # layers past the last hidden state the tokenizer reads
        raise ModelDirError("unexpected tensor (not part of wav2vec2)", weights, key)
    if needed_missing:
        raise ModelDirError("tensor is missing", weights, sorted(needed_missing)[0])
    model.config.num_hidden_layers = config.num_hidden_layers
    state = {}
    for key, tensor in model.state_dict().items():
        if "parametrizations" in key or key in unused:
            continue
        # A copy of our own: the loader may leave tensors mapped from the file, and a run
        # must not depend on the file staying unchanged under it.
        state[key] = tensor.detach().clone()
    state["encoder.pos_conv_embed.conv.weight"] = (
        model.encoder.pos_conv_embed.conv.weight.detach().clone()
    )
    return model.config, state

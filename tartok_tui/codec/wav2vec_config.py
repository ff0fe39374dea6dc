"""wav2vec2's config.json: the values the tokenizer's wav2vec2 modules are built from.

Plain Python (no torch), so that a process that only checks a model dir can read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from tartok_tui.codec.errors import ModelDirError


@dataclass(frozen=True)
class Wav2Vec2Settings:
    """The fields of wav2vec2's config.json the tokenizer's model is built from; a missing
    field takes the default of the original implementation's config."""

    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    do_stable_layer_norm: bool = False
    hidden_size: int = 768
    hidden_act: str = "gelu"
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-5
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16

    @classmethod
    def read(cls, path: Path) -> Wav2Vec2Settings:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelDirError(f"cannot read the wav2vec2 config: {exc}", path) from exc
        if not isinstance(raw, dict):
            raise ModelDirError("cannot read the wav2vec2 config: not a JSON object", path)
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: dict, path: Path) -> Wav2Vec2Settings:
        """From config.json's mapping (`path` names it in errors); unknown keys ignored."""
        values = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            value = raw[f.name]
            default = f.default
            try:
                if isinstance(default, tuple):
                    value = tuple(int(v) for v in value)
                elif isinstance(default, bool):
                    if not isinstance(value, bool):
                        raise TypeError("expected true or false")
                elif isinstance(default, (int, float)):
                    value = type(default)(value)
                elif not isinstance(value, str):
                    raise TypeError("expected a string")
            except (TypeError, ValueError) as exc:
                raise ModelDirError(f"bad value {value!r}: {exc}", path, f.name) from exc
            values[f.name] = value
        settings = cls(**values)
        if not len(settings.conv_dim) == len(settings.conv_kernel) == len(settings.conv_stride):
            raise ModelDirError("conv_dim, conv_kernel and conv_stride differ in length", path)
        for name in ("hidden_act", "feat_extract_activation"):
            if getattr(settings, name) != "gelu":
                raise ModelDirError("only gelu is supported", path, name)
        return settings

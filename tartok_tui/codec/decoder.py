"""BiCodec's decoder: (global tokens, semantic tokens) -> 16 kHz audio, as the official
``BiCodec.detokenize`` computes it.

    semantic (B, T) --codebook, out_project--> z_q (B, C, T)
    global (B, G) --FSQ codes, project_out, project--> d-vector (B, D)
    prenet(z_q, d) + d --wave generator--> audio (B, T * 320)

Attribute names match the official state dict (``quantizer.*``, ``speaker_encoder.*``,
``prenet.*``, ``decoder.*``); the weights are read from ``BiCodec/model.safetensors`` and
checked like the tokenizer's (``model_dir.load_bicodec_state``): every tensor this half
reads present with its shape, nothing unknown.

Batches are exact: clips are padded to the longest with token 0, every time convolution's
input is zeroed past each clip's frames (the prenet's and the wave generator's), and each
clip's audio is cut to its own T * 320 samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tartok_tui.codec.errors import ModelDirError
from tartok_tui.codec.feature_decoder import FeatureDecoder
from tartok_tui.codec.model_dir import BICODEC_DIR, load_bicodec_state, read_config
from tartok_tui.codec.wave_generator import WaveGenerator

TOKENIZER_ONLY_PREFIXES = (
    "encoder.",
    "quantizer.in_project.",
    "quantizer.cluster_size",
    "speaker_encoder.speaker_encoder.",
    "speaker_encoder.perceiver_sampler.",
    "speaker_encoder.quantizer.project_in.",
    "mel_transformer.",
    # The postnet predicts features for a training loss; detokenize never runs it.
    "postnet.",
)
"""Keys of the official BiCodec file that decoding never reads."""


class SemanticEmbedding(nn.Module):
    """Semantic tokens (B, T) -> latents (B, input_dim, T): codebook rows, then the
    (folded weight-norm) 1x1 out-projection."""

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.codebook = nn.Embedding(codebook_size, codebook_dim)
        self.out_project = nn.Conv1d(codebook_dim, input_dim, kernel_size=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out_project(F.embedding(tokens, self.codebook.weight).transpose(1, 2))


class _FSQProjectOut(nn.Module):
    """Holds ``project_out`` where the official residual FSQ has it."""

    def __init__(self, levels: int, dim: int) -> None:
        super().__init__()
        self.project_out = nn.Linear(levels, dim)


class SpeakerEmbedding(nn.Module):
    """Global tokens (B, G) -> d-vector (B, out_dim): each token's FSQ code (one quantizer,
    scale 1), projected to latent_dim, flattened latent-major, projected to out_dim."""

    _levels: torch.Tensor
    _basis: torch.Tensor

    def __init__(self, latent_dim: int, out_dim: int, token_num: int, levels: list[int]) -> None:
        super().__init__()
        self.quantizer = _FSQProjectOut(len(levels), latent_dim)
        self.project = nn.Linear(latent_dim * token_num, out_dim)
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int32), persistent=False)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]]), dim=0, dtype=torch.int32)
        self.register_buffer("_basis", basis, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        level = (tokens.unsqueeze(-1) // self._basis) % self._levels  # (B, G, len(levels))
        half_width = self._levels // 2
        codes = (level - half_width) / half_width
        latents = self.quantizer.project_out(codes)  # (B, G, latent_dim)
        return self.project(latents.transpose(1, 2).reshape(latents.shape[0], -1))


class BiCodecDecoder(nn.Module):
    """(global (B, G), semantic (B, T), frames (B,) or None) -> audio (B, T * hop), float32."""

    def __init__(self, section: dict) -> None:
        super().__init__()
        q = section["quantizer"]
        self.quantizer = SemanticEmbedding(
            int(q["input_dim"]), int(q["codebook_size"]), int(q["codebook_dim"])
        )
        spk = section["speaker_encoder"]
        self.speaker_encoder = SpeakerEmbedding(
            int(spk["latent_dim"]),
            int(spk["out_dim"]),
            int(spk["token_num"]),
            [int(n) for n in spk["fsq_levels"]],
        )
        self.prenet = FeatureDecoder.from_config(section["prenet"])
        self.decoder = WaveGenerator.from_config(section["decoder"])
        self.global_count = int(spk["token_num"])
        self.global_codes = int(np.prod([int(n) for n in spk["fsq_levels"]]))
        self.semantic_codes = int(q["codebook_size"])

    @property
    def hop(self) -> int:
        """Audio samples per semantic token (320 for the released model)."""
        return self.decoder.hop

    def forward(
        self,
        global_tokens: torch.Tensor,
        semantic_tokens: torch.Tensor,
        frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mask = None
        if frames is not None:
            t = torch.arange(semantic_tokens.shape[1], device=semantic_tokens.device)
            mask = (t[None, :] < frames[:, None]).to(torch.float32).unsqueeze(1)  # (B, 1, T)
        z_q = self.quantizer(semantic_tokens)
        d_vector = self.speaker_encoder(global_tokens)
        x = self.prenet(z_q, d_vector, mask) + d_vector.unsqueeze(-1)
        return self.decoder(x, mask).squeeze(1)


def load_decoder(model_dir: str | Path, device: torch.device | str = "cpu") -> BiCodecDecoder:
    """The decoder half of a model dir, weights checked and loaded, in eval mode on
    ``device``; ModelDirError names the file and key of anything missing or misshapen."""
    cfg = read_config(Path(model_dir))
    section = cfg.audio_tokenizer
    where = cfg.root / BICODEC_DIR / "config.yaml"
    for part in ("prenet", "decoder"):
        if not isinstance(section.get(part), dict):
            raise ModelDirError("missing or not a mapping", where, f"audio_tokenizer.{part}")
    try:
        model = BiCodecDecoder(section)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelDirError(f"unusable audio_tokenizer section: {exc!r}", where) from exc
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = load_bicodec_state(cfg, expected, unused_prefixes=TOKENIZER_ONLY_PREFIXES)
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False).to(device)

"""Global (speaker) tokens: mel -> ECAPA-TDNN frame features -> perceiver (32 latents) -> FSQ.

Parameter names follow the official checkpoint's `speaker_encoder.*` keys. Only the path to the
tokens is built: the ECAPA pooling/embedding head and the d-vector projection are not.
Every reference clip has the same length (6 s), so a batch needs no padding here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from tartok_tui.codec.precision import fp32_island

ECAPA_CHANNELS = 512
"""Fixed in the official speaker encoder, whatever the config says."""


class _ConvReluBn(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=padding)
        self.bn = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class _Res2Conv(nn.Module):
    """Res2Net-style hierarchical conv over `scale` channel groups (the last passes through)."""

    def __init__(self, channels: int, kernel: int, padding: int, dilation: int, scale: int):
        super().__init__()
        self.width = channels // scale
        self.convs = nn.ModuleList(
            nn.Conv1d(self.width, self.width, kernel, padding=padding, dilation=dilation)
            for _ in range(scale - 1)
        )
        self.bns = nn.ModuleList(nn.BatchNorm1d(self.width) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.width, 1)
        out = []
        y = parts[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            if i >= 1:
                y = y + parts[i]
            y = bn(F.relu(conv(y)))
            out.append(y)
        out.append(parts[len(self.convs)])
        return torch.cat(out, dim=1)


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, bottleneck: int = 128) -> None:
        super().__init__()
        self.linear1 = nn.Linear(channels, bottleneck)
        self.linear2 = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))
        return x * s.unsqueeze(2)


class _SERes2Block(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.se_res2block = nn.Sequential(
            _ConvReluBn(channels, channels),
            _Res2Conv(channels, 3, dilation, dilation, scale=8),
            _ConvReluBn(channels, channels),
            _SqueezeExcite(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.se_res2block(x)


class EcapaFrames(nn.Module):
    """ECAPA-TDNN up to its frame-level features: mel (B, F, T) -> (B, 3 * 512, T)."""

    def __init__(self, feat_dim: int) -> None:
        super().__init__()
        c = ECAPA_CHANNELS
        self.layer1 = _ConvReluBn(feat_dim, c, kernel=5, padding=2)
        self.layer2 = _SERes2Block(c, 2)
        self.layer3 = _SERes2Block(c, 3)
        self.layer4 = _SERes2Block(c, 4)
        self.conv = nn.Conv1d(3 * c, 3 * c, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.layer1(x)
        out2 = self.layer2(out1)
        out3 = self.layer3(out2)
        out4 = self.layer4(out3)
        return F.relu(self.conv(torch.cat([out2, out3, out4], dim=1)))


class _CrossAttention(nn.Module):
    """Latents attend to [latents; context] (the queries are part of the keys)."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, latents: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """latents (B, L, D), context (B, T, D) -> (B, L, D)."""
        context = torch.cat((latents, context), dim=-2)
        q = self.to_q(latents)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        b = q.shape[0]

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)

        q, k, v = heads(q), heads(k), heads(v)
        # Plain softmax attention, as the official model computes it (not SDPA), so the
        # speaker tokens round the same way.
        sim = torch.einsum("bhid,bhjd->bhij", q, k) * q.shape[-1] ** -0.5
        out = torch.einsum("bhij,bhjd->bhid", sim.softmax(dim=-1), v)
        return self.to_out(out.transpose(1, 2).reshape(b, -1, out.shape[1] * out.shape[3]))


class _GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


class _RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class Perceiver(nn.Module):
    """Frame features (B, T, C_ctx) -> (B, num_latents, dim)."""

    def __init__(self, dim: int, dim_context: int, num_latents: int, depth: int = 2) -> None:
        super().__init__()
        self.proj_context = nn.Linear(dim_context, dim)
        self.latents = nn.Parameter(torch.zeros(num_latents, dim))
        inner = int(dim * 4 * 2 / 3)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    _CrossAttention(dim),
                    nn.Sequential(nn.Linear(dim, inner * 2), _GEGLU(), nn.Linear(inner, dim)),
                ]
            )
            for _ in range(depth)
        )
        self.norm = _RMSNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_context(x)
        latents = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)
        for layer in self.layers:
            assert isinstance(layer, nn.ModuleList)  # (attention, feed-forward), as built
            attn, ff = layer
            latents = attn(latents, x) + latents
            latents = ff(latents) + latents
        return self.norm(latents)


class _FSQIndices(nn.Module):
    """Project to len(levels) dims, bound, round: (B, L, dim) -> indices (B, L)."""

    _levels: torch.Tensor
    _basis: torch.Tensor

    def __init__(self, dim: int, levels: list[int]) -> None:
        super().__init__()
        self.project_in = nn.Linear(dim, len(levels))
        self.codebook_size = math.prod(levels)
        lv = torch.tensor(levels, dtype=torch.int32)
        self.register_buffer("_levels", lv, persistent=False)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]]), dim=0, dtype=torch.int32)
        self.register_buffer("_basis", basis, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In fp32 with autocast off: the rounding picks a cell, which bf16 would move.
        with fp32_island(x):
            return self._indices(self.project_in(x.float()))

    def _indices(self, z: torch.Tensor) -> torch.Tensor:
        levels = self._levels
        half_l = (levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        shift = (offset / half_l).atanh()
        bounded = (z + shift).tanh() * half_l - offset
        half_width = levels // 2
        codes = bounded.round() / half_width
        level_index = codes * half_width + half_width
        return (level_index * self._basis).sum(dim=-1).to(torch.int32)


class SpeakerTokenizer(nn.Module):
    """Mel (B, n_mels, T) of the 6 s reference -> global tokens (B, token_num)."""

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        token_num: int,
        fsq_levels: list[int],
        fsq_num_quantizers: int = 1,
    ) -> None:
        super().__init__()
        if fsq_num_quantizers != 1:
            raise ValueError(f"only one FSQ quantizer is supported, got {fsq_num_quantizers}")
        self.speaker_encoder = EcapaFrames(input_dim)
        self.perceiver_sampler = Perceiver(latent_dim, 3 * ECAPA_CHANNELS, token_num)
        self.quantizer = _FSQIndices(latent_dim, list(fsq_levels))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.latents(mel))

    def latents(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel (B, n_mels, T) -> what FSQ quantizes (B, token_num, latent_dim)."""
        frames = self.speaker_encoder(mel)
        return self.perceiver_sampler(frames.transpose(1, 2))


def mel_transform(params: dict) -> torchaudio.transforms.MelSpectrogram:
    """The official mel front end of the speaker path: (B, N) -> (B, n_mels, frames)."""
    return torchaudio.transforms.MelSpectrogram(
        params["sample_rate"],
        params["n_fft"],
        params["win_length"],
        params["hop_length"],
        params["mel_fmin"],
        params["mel_fmax"],
        n_mels=params["num_mels"],
        power=1,
        norm="slaney",
        mel_scale="slaney",
    )

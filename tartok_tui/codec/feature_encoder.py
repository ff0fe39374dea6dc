"""BiCodec's semantic feature encoder: Vocos/ConvNeXt backbones, length preserving.

Parameter names follow the official checkpoint's `encoder.*` keys; the decoder's prenet
(codec/feature_decoder.py) is built from the same backbone, conditioned on the speaker. Every convolution here is
zero-padded in time, so in a padded batch the padded frames are zeroed at the input of each
convolution: a clip's valid frames then see exactly the zeros a lone clip sees.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tartok_tui.codec.wav2vec import gelu_


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


def _norm(dim: int, condition_dim: int | None) -> nn.Module:
    """LayerNorm, or AdaLayerNorm when the backbone is conditioned (BiCodec's prenet); the
    module sits where the checkpoint's ``norm`` keys say."""
    return (
        nn.LayerNorm(dim, eps=1e-6) if condition_dim is None else AdaLayerNorm(condition_dim, dim)
    )


def _apply_norm(norm: nn.Module, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
    if isinstance(norm, AdaLayerNorm):
        assert condition is not None, "a conditioned backbone needs its condition"
        return norm(x, condition)
    return norm(x)


class AdaLayerNorm(nn.Module):
    """LayerNorm without affine, then a scale and shift computed from a condition vector."""

    def __init__(self, condition_dim: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.scale = nn.Linear(condition_dim, dim)
        self.shift = nn.Linear(condition_dim, dim)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), condition (B, condition_dim) -> (B, T, C)."""
        y = F.layer_norm(x, (self.dim,), eps=1e-6)
        return y * self.scale(condition).unsqueeze(1) + self.shift(condition).unsqueeze(1)


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (k 7) -> (Ada)LayerNorm -> Linear -> GELU -> Linear -> layer scale, residual."""

    def __init__(self, dim: int, intermediate_dim: int, condition_dim: int | None = None) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = _norm(dim, condition_dim)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, C, T), mask (B, 1, T) or None, condition (B, D) or None -> (B, C, T)."""
        y = _apply_norm(self.norm, self.dwconv(_masked(x, mask)).transpose(1, 2), condition)
        y = self.pwconv2(gelu_(self.pwconv1(y)))
        return x + (self.gamma * y).transpose(1, 2)


class VocosBackbone(nn.Module):
    """(B, C_in, T) -> (B, T, dim): embedding conv, ConvNeXt blocks, final LayerNorm.

    With ``condition_dim`` every norm but the last is an AdaLayerNorm of the condition."""

    def __init__(
        self,
        input_channels: int,
        dim: int,
        intermediate_dim: int,
        num_layers: int,
        condition_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, kernel_size=7, padding=3)
        self.norm = _norm(dim, condition_dim)
        self.convnext = nn.ModuleList(
            ConvNeXtBlock(dim, intermediate_dim, condition_dim) for _ in range(num_layers)
        )
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = _apply_norm(self.norm, self.embed(_masked(x, mask)).transpose(1, 2), condition)
        x = x.transpose(1, 2)
        for block in self.convnext:
            x = block(x, mask, condition)
        return self.final_layer_norm(x.transpose(1, 2))


def check_unit_ratios(sample_ratios: list[int] | tuple[int, ...]) -> None:
    """ValueError unless every ratio is 1: resampling would change the token rate (50/s),
    and no released model does it."""
    if any(r != 1 for r in sample_ratios):
        raise ValueError(f"only sample_ratios of 1 are supported, got {list(sample_ratios)}")


class UnitSampling(nn.Module):
    """The official sampling block at ratio 1: its conv and both skips are the identity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, C, T)."""
        x = x.transpose(1, 2)
        return x + x + x


class SemanticEncoder(nn.Module):
    """wav2vec2 features (B, C_in, T) -> latents (B, out_channels, T)."""

    def __init__(
        self,
        input_channels: int,
        vocos_dim: int,
        vocos_intermediate_dim: int,
        vocos_num_layers: int,
        out_channels: int,
        sample_ratios: list[int] | tuple[int, ...] = (1, 1),
    ) -> None:
        super().__init__()
        check_unit_ratios(sample_ratios)
        self.encoder = VocosBackbone(
            input_channels, vocos_dim, vocos_intermediate_dim, vocos_num_layers
        )
        self.downsample = nn.ModuleList(
            nn.ModuleList(
                [UnitSampling(), VocosBackbone(vocos_dim, vocos_dim, vocos_intermediate_dim, 2)]
            )
            for _ in sample_ratios
        )
        self.project = nn.Linear(vocos_dim, out_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C_in, T), mask (B, 1, T) of 0/1 or None -> (B, out_channels, T)."""
        h = self.encoder(x, mask)
        for stage in self.downsample:
            assert isinstance(stage, nn.ModuleList)  # (sampling, backbone), as built
            sampling, backbone = stage
            h = backbone(sampling(h), mask)
        return self.project(h).transpose(1, 2)

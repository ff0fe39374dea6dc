"""BiCodec's semantic feature encoder: Vocos/ConvNeXt backbones, length preserving.

Parameter names follow the official checkpoint's `encoder.*` keys. Every convolution here is
zero-padded in time, so in a padded batch the padded frames are zeroed at the input of each
convolution: a clip's valid frames then see exactly the zeros a lone clip sees.
"""

from __future__ import annotations

import torch
from torch import nn

from tartok_tui.codec.wav2vec import gelu_


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (k 7) -> LayerNorm -> Linear -> GELU -> Linear -> layer scale, residual."""

    def __init__(self, dim: int, intermediate_dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, C, T), mask (B, 1, T) or None -> (B, C, T)."""
        y = self.dwconv(_masked(x, mask)).transpose(1, 2)
        y = self.pwconv2(gelu_(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class VocosBackbone(nn.Module):
    """(B, C_in, T) -> (B, T, dim): embedding conv, ConvNeXt blocks, final LayerNorm."""

    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int):
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.convnext = nn.ModuleList(
            ConvNeXtBlock(dim, intermediate_dim) for _ in range(num_layers)
        )
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.norm(self.embed(_masked(x, mask)).transpose(1, 2)).transpose(1, 2)
        for block in self.convnext:
            x = block(x, mask)
        return self.final_layer_norm(x.transpose(1, 2))


class _UnitSampling(nn.Module):
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
        if any(r != 1 for r in sample_ratios):
            # Resampling would change the token rate (50/s); no released model does it.
            raise ValueError(f"only sample_ratios of 1 are supported, got {list(sample_ratios)}")
        self.encoder = VocosBackbone(
            input_channels, vocos_dim, vocos_intermediate_dim, vocos_num_layers
        )
        self.downsample = nn.ModuleList(
            nn.ModuleList(
                [_UnitSampling(), VocosBackbone(vocos_dim, vocos_dim, vocos_intermediate_dim, 2)]
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

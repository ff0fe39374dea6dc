"""BiCodec's feature decoder (the checkpoint's ``prenet`` and ``postnet``): latents back to
features, length preserving, optionally conditioned on the speaker's d-vector.

Parameter names follow the official `prenet.*` / `postnet.*` keys. As in the encoder, every
time convolution's input is zeroed past each clip's frames in a padded batch.
"""

from __future__ import annotations

import torch
from torch import nn

from tartok_tui.codec.feature_encoder import UnitSampling, VocosBackbone, check_unit_ratios


class FeatureDecoder(nn.Module):
    """(B, C_in, T) [+ condition (B, condition_dim)] -> (B, out_channels, T)."""

    def __init__(
        self,
        input_channels: int,
        vocos_dim: int,
        vocos_intermediate_dim: int,
        vocos_num_layers: int,
        out_channels: int,
        condition_dim: int | None = None,
        sample_ratios: list[int] | tuple[int, ...] = (1, 1),
        use_tanh_at_final: bool = False,
    ) -> None:
        super().__init__()
        check_unit_ratios(sample_ratios)
        self.linear_pre = nn.Linear(input_channels, vocos_dim)
        self.downsample = nn.ModuleList(
            nn.ModuleList(
                [UnitSampling(), VocosBackbone(vocos_dim, vocos_dim, vocos_intermediate_dim, 2)]
            )
            for _ in sample_ratios
        )
        self.vocos_backbone = VocosBackbone(
            vocos_dim, vocos_dim, vocos_intermediate_dim, vocos_num_layers, condition_dim
        )
        self.linear = nn.Linear(vocos_dim, out_channels)
        self.use_tanh_at_final = use_tanh_at_final

    @classmethod
    def from_config(cls, section: dict) -> FeatureDecoder:
        """From a ``prenet`` / ``postnet`` config section (KeyError, TypeError, ValueError)."""
        return cls(
            int(section["input_channels"]),
            int(section["vocos_dim"]),
            int(section["vocos_intermediate_dim"]),
            int(section["vocos_num_layers"]),
            int(section["out_channels"]),
            None if section.get("condition_dim") is None else int(section["condition_dim"]),
            list(section.get("sample_ratios", [1, 1])),
            bool(section.get("use_tanh_at_final", False)),
        )

    def forward(
        self,
        x: torch.Tensor,
        condition: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, C_in, T), condition (B, D) or None, mask (B, 1, T) or None -> (B, C_out, T)."""
        h = self.linear_pre(x.transpose(1, 2))  # (B, T, dim)
        for stage in self.downsample:
            assert isinstance(stage, nn.ModuleList)  # (sampling, backbone), as built
            sampling, backbone = stage
            h = backbone(sampling(h), mask)
        h = self.vocos_backbone(h.transpose(1, 2), mask, condition)
        out = self.linear(h).transpose(1, 2)
        return torch.tanh(out) if self.use_tanh_at_final else out

"""BiCodec's wave generator (the checkpoint's ``decoder``): 50 Hz features -> 16 kHz audio.

A DAC-style generator: a conv, one upsampling block per rate (Snake, transposed conv, three
dilated residual units), Snake, a conv to one channel, tanh. The official convs are
weight-normed (``weight_g`` / ``weight_v``); they are stored here with the weight folded.
Parameter names follow the official keys (``decoder.model.<i>...``).

Exact batching: in a padded batch, the input of every convolution that mixes time steps is
zeroed past each clip's samples at that resolution, so a clip's samples see exactly the
zeros a lone clip sees (1x1 convolutions and Snake act per step and need no mask).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


def upsample_mask(mask: torch.Tensor | None, factor: int) -> torch.Tensor | None:
    """(B, 1, T) -> (B, 1, T * factor): each step's flag repeated over the steps it becomes."""
    return None if mask is None else mask.repeat_interleave(factor, dim=2)


class Snake(nn.Module):
    """x + sin(alpha x)^2 / alpha, per channel: (B, C, T) -> (B, C, T)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class ResidualUnit(nn.Module):
    """Snake -> dilated conv (k 7) -> Snake -> 1x1 conv, plus the input: (B, C, T) -> (B, C, T)."""

    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.ModuleList(
            [
                Snake(dim),
                nn.Conv1d(dim, dim, kernel_size=7, dilation=dilation, padding=3 * dilation),
                Snake(dim),
                nn.Conv1d(dim, dim, kernel_size=1),
            ]
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        snake1, conv, snake2, pointwise = self.block
        return x + pointwise(snake2(conv(_masked(snake1(x), mask))))


class UpsamplingBlock(nn.Module):
    """Snake -> transposed conv (stride = rate) -> residual units with dilations 1, 3, 9:
    (B, C_in, T) -> (B, C_out, T * rate)."""

    def __init__(self, input_dim: int, output_dim: int, kernel_size: int, rate: int) -> None:
        super().__init__()
        self.rate = rate
        self.block = nn.ModuleList(
            [
                Snake(input_dim),
                nn.ConvTranspose1d(
                    input_dim,
                    output_dim,
                    kernel_size=kernel_size,
                    stride=rate,
                    padding=(kernel_size - rate) // 2,
                ),
                ResidualUnit(output_dim, 1),
                ResidualUnit(output_dim, 3),
                ResidualUnit(output_dim, 9),
            ]
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``mask`` is at the input's resolution; the units get it at the output's."""
        snake, upsample, *units = self.block
        x = upsample(_masked(snake(x), mask))
        mask = upsample_mask(mask, self.rate)
        for unit in units:
            x = unit(x, mask)
        return x


class WaveGenerator(nn.Module):
    """Features (B, input_channel, T) -> audio (B, 1, T * prod(rates)) in [-1, 1]."""

    def __init__(
        self,
        input_channel: int,
        channels: int,
        rates: list[int],
        kernel_sizes: list[int],
        d_out: int = 1,
    ) -> None:
        super().__init__()
        if len(rates) != len(kernel_sizes) or not rates:
            raise ValueError(f"rates {rates} and kernel_sizes {kernel_sizes} must pair up")
        for kernel, rate in zip(kernel_sizes, rates, strict=True):
            if kernel - rate < 0 or (kernel - rate) % 2:
                # Only then is the output exactly T * rate long, as the official configs give.
                raise ValueError(f"kernel size {kernel} does not fit rate {rate}")
        layers: list[nn.Module] = [nn.Conv1d(input_channel, channels, kernel_size=7, padding=3)]
        for i, (kernel, rate) in enumerate(zip(kernel_sizes, rates, strict=True)):
            layers.append(UpsamplingBlock(channels // 2**i, channels // 2 ** (i + 1), kernel, rate))
        out_dim = channels // 2 ** len(rates)
        layers += [Snake(out_dim), nn.Conv1d(out_dim, d_out, kernel_size=7, padding=3)]
        self.model = nn.ModuleList(layers)
        self.hop = math.prod(rates)

    @classmethod
    def from_config(cls, section: dict) -> WaveGenerator:
        """From the ``decoder`` config section (KeyError, TypeError, ValueError)."""
        return cls(
            int(section["input_channel"]),
            int(section["channels"]),
            [int(r) for r in section["rates"]],
            [int(k) for k in section["kernel_sizes"]],
            int(section.get("d_out", 1)),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, T), mask (B, 1, T) of 0/1 or None -> (B, d_out, T * hop)."""
        first, *blocks, snake, last = self.model
        x = first(_masked(x, mask))
        for block in blocks:
            assert isinstance(block, UpsamplingBlock)  # as built
            x = block(x, mask)
            mask = upsample_mask(mask, block.rate)
        return torch.tanh(last(_masked(snake(x), mask)))

"""wav2vec2 (stable-layer-norm variant, as in xlsr-53) truncated to the layers the tokenizer reads.

The tokenizer averages hidden states 11, 14 and 16, where hidden state k is the input of
transformer layer k. Layers 16.. are never needed, and neither is the encoder's final layer
norm: it only touches the last hidden state of the full stack, which is hidden state 16 only
in a model of exactly 16 layers (small test models), where it is applied.

Parameter names follow transformers' `Wav2Vec2Model`, so its state dict loads as is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from tartok_tui.codec.precision import fp32_island

if TYPE_CHECKING:
    from tartok_tui.codec.wav2vec_config import Wav2Vec2Settings


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU in place, on a buffer the caller owns: same values as F.gelu."""
    return torch.ops.aten.gelu_(x)


class _ConvLayer(nn.Module):
    """Conv -> LayerNorm over channels -> GELU, run channels-last as GEMMs on the frames.

    An unpadded strided conv over channels-last frames is a GEMM over (kernel * C_in)-wide
    windows cut from the contiguous (T, C) buffer, so no transposes are needed and the
    LayerNorm runs on the GEMM output directly. When the kernel is wider than the stride
    the windows overlap and cannot be one GEMM operand without copying them all; then the
    taps are taken `stride` at a time: each group is a plain strided view of the buffer
    (rows `stride * C_in` apart, non-overlapping), and the groups' GEMMs accumulate into
    one output.
    """

    COPY_BELOW = 64
    """Input channels under which the windows are copied instead (the first layer: one
    channel, so the copy is tiny and one K=kernel GEMM beats several thin ones)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=bias)
        self.layer_norm = nn.LayerNorm(c_out)
        self.kernel = kernel
        self.stride = stride
        self._gemm_weight: torch.Tensor | None = None
        self._tap_groups: list[tuple[int, torch.Tensor]] = []
        """(first tap, weight rows of the taps from it to the next group's first)."""

    def prepare(self) -> None:
        """Cache the conv weight as a (kernel * C_in, C_out) GEMM operand, window-major."""
        w = self.conv.weight.detach()  # (C_out, C_in, K)
        c_in = w.shape[1]
        self._gemm_weight = w.permute(2, 1, 0).reshape(-1, w.shape[0]).contiguous()
        self._tap_groups = []
        if self.kernel > self.stride and c_in >= self.COPY_BELOW:
            self._tap_groups = [
                (tap, self._gemm_weight[tap * c_in : (tap + self.stride) * c_in])
                for tap in range(0, self.kernel, self.stride)
            ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C_in) channels-last -> (B, T', C_out)."""
        x = x.contiguous()  # the windows below are cut from the flat (T, C) buffer
        b, t, c = x.shape
        t_out = (t - self.kernel) // self.stride + 1
        weight = self._gemm_weight
        if weight is None or weight.device != x.device:
            self.prepare()
            weight = self._gemm_weight
        assert weight is not None
        if self._tap_groups and not torch.is_autocast_enabled(x.device.type):
            # (Under autocast the one-GEMM path below, whose ops autocast casts.)
            y = self._grouped_taps(x, t_out)
        else:
            if self.kernel == self.stride:
                windows = x[:, : t_out * self.stride].reshape(b, t_out, self.kernel * c)
            else:
                windows = x.as_strided(
                    (b, t_out, self.kernel * c),
                    (x.stride(0), self.stride * c, 1),
                    x.storage_offset(),
                )
            if self.conv.bias is not None:
                y = torch.addmm(self.conv.bias, windows.reshape(-1, self.kernel * c), weight)
            else:
                y = windows.reshape(-1, self.kernel * c) @ weight
        # In place: the LayerNorm output is ours alone, and a fresh buffer of this size
        # (tens of MiB for the first layers) costs more than the GELU itself.
        return gelu_(self.layer_norm(y.view(b, t_out, -1)))

    def _grouped_taps(self, x: torch.Tensor, t_out: int) -> torch.Tensor:
        """(B, T, C_in) contiguous -> (B * T', C_out): one GEMM per group of `stride` taps.

        Clip by clip, the same GEMMs whatever the batch: a clip's frames come out the same
        alone or in a batch."""
        b, t, c = x.shape
        c_out = self.conv.out_channels
        bias = self.conv.bias
        y = x.new_empty((b, t_out, c_out))
        for i in range(b):
            out = y[i]
            for n, (tap, weight) in enumerate(self._tap_groups):
                width = weight.shape[0]  # the last group may hold fewer taps
                rows = x.as_strided(
                    (t_out, width), (self.stride * c, 1), x.storage_offset() + i * t * c + tap * c
                )
                if n > 0:
                    out.addmm_(rows, weight)
                elif bias is not None:
                    torch.addmm(bias, rows, weight, out=out)
                else:
                    torch.mm(rows, weight, out=out)
        return y.view(b * t_out, c_out)


class FeatureEncoder(nn.Module):
    """The convolutional front end: (B, N) samples -> (B, T, C) frames (channels-last)."""

    def __init__(self, config: Wav2Vec2Settings) -> None:
        super().__init__()
        if config.feat_extract_norm != "layer":
            raise ValueError("only the layer-norm conv front end (xlsr-53 style) is supported")
        dims = [1, *config.conv_dim]
        self.conv_layers = nn.ModuleList(
            _ConvLayer(dims[i], dims[i + 1], k, s, config.conv_bias)
            for i, (k, s) in enumerate(zip(config.conv_kernel, config.conv_stride, strict=True))
        )

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        # Valid frames of these unpadded convs read only their own clip's samples, so padding
        # after a clip never reaches its valid frames; nothing here needs masking.
        x = samples.unsqueeze(-1)
        for layer in self.conv_layers:
            x = layer(x)
        return x


class _FeatureProjection(nn.Module):
    def __init__(self, c_in: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(c_in, eps=eps)
        self.projection = nn.Linear(c_in, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.layer_norm(x))


class _PositionalConv(nn.Module):
    """Grouped conv positional embedding, run as an FFT convolution (overlap-save).

    The kernel is long (128 taps over 16 groups of 64 channels): as a direct conv it costs
    about 17 MFLOP per frame; per frequency of a 2K-point FFT it is one 64 x 64 complex
    product per group and block of K + 1 frames, some 40 times fewer operations. The
    results differ from the direct conv by rounding only (about 1e-6 relative). The
    weight is stored already weight-norm folded; its spectrum is cached by prepare().
    """

    def __init__(self, hidden: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2, groups=groups)
        self.kernel = kernel
        self.fft_size = 2 * kernel
        self.block = self.fft_size - kernel + 1
        """Output frames per FFT block: those its circular convolution gets right."""
        self._spectrum: torch.Tensor | None = None

    def prepare(self) -> None:
        """Cache the kernel's spectrum, (freq, group, C_in, C_out) complex64."""
        w = self.conv.weight.detach().float()  # (C_out, C_in per group, K)
        g = self.conv.groups
        c = w.shape[1]
        # A correlation (what conv1d computes) is a convolution with the reversed kernel.
        h = w.view(g, c, c, self.kernel).flip(-1)  # (group, C_out, C_in, K)
        spectrum = torch.fft.rfft(h, n=self.fft_size, dim=-1)
        self._spectrum = spectrum.permute(3, 0, 2, 1).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C) in x's dtype: the conv (padding K // 2, even K's last
        frame dropped), then GELU, computed in fp32 whatever the autocast. Frame t is
        sum_k w[k] x[t + k - K // 2]."""
        with fp32_island(x):
            return self._conv(x)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        if self._spectrum is None or self._spectrum.device != x.device:
            self.prepare()
        spectrum = self._spectrum
        assert spectrum is not None
        b, t, c = x.shape
        k, n, block = self.kernel, self.fft_size, self.block
        g = self.conv.groups
        blocks = -(-t // block)
        if b * blocks == 1:
            # One row would make the complex product a matrix-vector product, which rounds
            # differently: a short clip would not get the same frames alone and in a batch.
            blocks = 2
        # Block j reads frames [j * block - K // 2, j * block - K // 2 + n), zeros outside.
        padded = x.new_zeros((b, blocks * block + n, c), dtype=torch.float32)
        padded[:, k // 2 : k // 2 + t] = x
        windows = padded.unfold(1, n, block)[:, :blocks]  # (B, blocks, C, n)
        freq = torch.fft.rfft(windows, dim=-1)  # (B, blocks, C, F)
        f = freq.shape[-1]
        freq = freq.view(b * blocks, g, c // g, f).permute(3, 1, 0, 2)  # (F, G, B*blocks, C_in)
        out = torch.matmul(freq, spectrum)  # (F, G, B*blocks, C_out)
        out = out.permute(2, 1, 3, 0).reshape(b, blocks, c, f)
        frames = torch.fft.irfft(out, n=n, dim=-1)[..., k - 1 : k - 1 + block]
        y = frames.transpose(2, 3).reshape(b, blocks * block, c)[:, :t]
        # Into a contiguous buffer: GELU rounds differently on a strided one, and a clip
        # must get the same frames alone and in a batch.
        bias = self.conv.bias
        assert bias is not None  # the conv is built with one
        y = torch.add(y, bias, out=torch.empty((b, t, c), dtype=y.dtype, device=y.device))
        return gelu_(y).to(x.dtype)  # (a new buffer only under autocast)


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden)
        self.v_proj = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, hidden)

        self._qkv: tuple[torch.Tensor, torch.Tensor] | None = None

    def prepare(self) -> None:
        """Store q/k/v as one (3C, C) projection: one wide GEMM runs closer to peak than three.

        The three projections become views into it, so no weight is held twice."""
        projections = (self.q_proj, self.k_proj, self.v_proj)
        weight = torch.cat([p.weight.detach() for p in projections])
        bias = torch.cat([p.bias.detach() for p in projections])
        c = self.q_proj.weight.shape[0]
        for i, p in enumerate(projections):
            p.weight.data = weight[i * c : (i + 1) * c]
            p.bias.data = bias[i * c : (i + 1) * c]
        self._qkv = (weight, bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, C), additive mask (B, 1, 1, T) or None -> (B, T, C)."""
        b, t, c = x.shape
        if self._qkv is None or self._qkv[0].device != x.device:
            self.prepare()
        assert self._qkv is not None
        qkv = F.linear(x, *self._qkv).view(b, t, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.head_dim**-0.5)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, c))


class _FeedForward(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(hidden, inner)
        self.output_dense = nn.Linear(inner, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(gelu_(self.intermediate_dense(x)))


class _Layer(nn.Module):
    """Pre-norm transformer layer (the stable-layer-norm variant)."""

    def __init__(self, hidden: int, heads: int, inner: int, eps: float) -> None:
        super().__init__()
        self.attention = _Attention(hidden, heads)
        self.layer_norm = nn.LayerNorm(hidden, eps=eps)
        self.feed_forward = _FeedForward(hidden, inner)
        self.final_layer_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attention(self.layer_norm(x), mask)
        return x + self.feed_forward(self.final_layer_norm(x))


class _Encoder(nn.Module):
    def __init__(self, config: Wav2Vec2Settings, num_layers: int) -> None:
        super().__init__()
        hidden = config.hidden_size
        # The final layer norm is part of the last hidden state only: it is used when the
        # model has exactly `num_layers` layers (a small test model), never for xlsr-53's 24.
        self.layer_norm = (
            nn.LayerNorm(hidden, eps=config.layer_norm_eps)
            if config.num_hidden_layers == num_layers
            else None
        )
        self.pos_conv_embed = _PositionalConv(
            hidden, config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
        )
        self.layers = nn.ModuleList(
            _Layer(
                hidden, config.num_attention_heads, config.intermediate_size, config.layer_norm_eps
            )
            for _ in range(num_layers)
        )


class SemanticFeatures(nn.Module):
    """Samples -> mean of wav2vec2 hidden states 11, 14, 16: (B, N) -> (B, T, C).

    Padded frames are zeroed before the positional conv (which is zero-padded for a lone clip)
    and hidden from attention keys, so a clip's valid frames match the clip run alone.
    """

    LAYERS = (11, 14, 16)

    def __init__(self, config: Wav2Vec2Settings) -> None:
        super().__init__()
        if not config.do_stable_layer_norm:
            raise ValueError("only the stable-layer-norm wav2vec2 variant (xlsr-53) is supported")
        self.kernels = tuple(config.conv_kernel)
        self.strides = tuple(config.conv_stride)
        self.feature_extractor = FeatureEncoder(config)
        self.feature_projection = _FeatureProjection(
            config.conv_dim[-1], config.hidden_size, config.layer_norm_eps
        )
        self.encoder = _Encoder(config, max(self.LAYERS))

    def prepare(self) -> None:
        """Build the weights' cached forms (GEMM operands, fused q/k/v, kernel spectrum) now,
        on the module's device, rather than in the first forward pass."""
        for module in self.modules():
            if isinstance(module, (_ConvLayer, _Attention, _PositionalConv)):
                module.prepare()

    def frames_of(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames after the unpadded feature convolutions, for a tensor of lengths, computed
        where the lengths are."""
        frames = lengths
        for k, s in zip(self.kernels, self.strides, strict=True):
            frames = (torch.div(frames - k, s, rounding_mode="floor") + 1).clamp_(min=0)
        return frames

    def forward(
        self,
        samples: torch.Tensor,
        lengths: torch.Tensor | None = None,
        on_layer: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """samples (B, N) normalised per clip, int64 lengths (B,) in samples on the same
        device (None: no padding) -> (B, T, C). `on_layer` is called after each
        transformer layer."""
        x = self.feature_projection(self.feature_extractor(samples))
        mask = None
        if lengths is not None:
            frames = self.frames_of(lengths)
            valid = torch.arange(x.shape[1], device=x.device)[None, :] < frames[:, None]
            x = x * valid.unsqueeze(-1).to(x.dtype)
            mask = torch.zeros(valid.shape, dtype=x.dtype, device=x.device)
            mask.masked_fill_(~valid, torch.finfo(x.dtype).min)
            mask = mask[:, None, None, :]
        x = x + self.encoder.pos_conv_embed(x)
        total: torch.Tensor | None = None
        for i, layer in enumerate(self.encoder.layers):
            if i in self.LAYERS:
                total = x if total is None else total + x
            x = layer(x, mask)
            if on_layer is not None:
                on_layer()
        if self.encoder.layer_norm is not None:
            x = self.encoder.layer_norm(x)
        assert total is not None
        return (total + x) / 3

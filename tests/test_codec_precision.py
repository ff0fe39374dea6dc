"""Precision means what it says: under bf16 autocast the mel, the FFT positional conv, the VQ and
the FSQ run in fp32 (checked op by op, by dtype, on the CPU's autocast); fp32 on CUDA is IEEE."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from codec_support import speech_like
from torch.utils._python_dispatch import TorchDispatchMode

from tartok_tui.codec.precision import tf32_enabled, use_ieee_fp32
from tartok_tui.codec.quantizer import FactorizedVQ
from tartok_tui.codec.speaker import _FSQIndices
from tartok_tui.codec.tokenizer import BiCodecTokenizer, Tokens
from tartok_tui.codec.wav2vec import _PositionalConv

BF16 = torch.autocast("cpu", dtype=torch.bfloat16)
COMPUTE_OPS = (
    *("conv1d", "convolution", "linear", "matmul", "mm", "bmm", "addmm", "einsum"),
    *("stft", "fft_rfft", "fft_irfft", "_fft_r2c", "_fft_c2r", "gelu", "gelu_"),
)
"""The ops that compute (others move or reshape), as the dispatcher shows them to a mode."""


class _OpDtypes(TorchDispatchMode):
    """Records (module on top of the stack, aten op, output dtype) of every op it sees: the
    ops as autocast leaves them."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = ["-"]
        self.ops: list[tuple[str, str, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self.ops.append((self.stack[-1], func._overloadpacket.__name__, out.dtype))
        return out


@contextmanager
def _recording(modules: dict[str, torch.nn.Module]) -> Iterator[_OpDtypes]:
    mode = _OpDtypes()

    def leave(module, args, output) -> None:
        mode.stack.pop()

    handles = []
    for name, module in modules.items():
        handles.append(module.register_forward_pre_hook(lambda m, a, n=name: mode.stack.append(n)))
        handles.append(module.register_forward_hook(leave))
    try:
        with mode:
            yield mode
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture(scope="module")
def bf16(tiny_model_dir: Path) -> BiCodecTokenizer:
    return BiCodecTokenizer.load(tiny_model_dir, precision="bf16")


def test_under_bf16_the_islands_compute_in_fp32_and_the_rest_in_bf16(
    bf16: BiCodecTokenizer,
) -> None:
    islands = {
        "mel": bf16.bicodec.mel_transformer,
        "pos_conv": bf16.semantic.encoder.pos_conv_embed,
        "vq": bf16.bicodec.quantizer,
        # The speaker path, part by part (the tokenizer checks its latents before the FSQ).
        "speaker": bf16.bicodec.speaker_encoder.speaker_encoder,  # ECAPA
        "speaker perceiver": bf16.bicodec.speaker_encoder.perceiver_sampler,
        "speaker fsq": bf16.bicodec.speaker_encoder.quantizer,
        "wav2vec2 layer": bf16.semantic.encoder.layers[0],
    }
    clips = [speech_like(s, 16000, seed=i).astype(np.float32) for i, s in enumerate([1.2, 0.7])]
    with _recording(islands) as rec:
        out = bf16.tokenize(clips)
    assert all(isinstance(r, Tokens) for r in out)
    seen: dict[str, set[torch.dtype]] = {}
    for where, op, dtype in rec.ops:
        if op in COMPUTE_OPS:
            seen.setdefault(where, set()).add(dtype)
    for island in ("mel", "pos_conv", "vq", "speaker", "speaker perceiver", "speaker fsq"):
        assert seen[island] <= {torch.float32, torch.complex64}, (island, seen[island])
    assert seen["wav2vec2 layer"] == {torch.bfloat16}  # autocast is on where it should be
    assert torch.bfloat16 in seen["-"]  # the conv front end and the BiCodec encoder


def test_each_island_gives_under_autocast_exactly_what_fp32_gives() -> None:
    torch.manual_seed(0)
    vq = FactorizedVQ(64, 8192, 8).eval()
    fsq = _FSQIndices(64, [4] * 6).eval()
    conv = _PositionalConv(64, 16, 2).eval()
    z = torch.randn(2, 64, 300)
    latents = torch.randn(2, 32, 64)
    frames = torch.randn(2, 90, 64).bfloat16()  # what the layers before it hand over
    with torch.inference_mode():
        exact = vq(z), fsq(latents), conv(frames.float())
        with BF16:
            low = vq(z), fsq(latents), conv(frames)
    assert torch.equal(low[0], exact[0])
    assert torch.equal(low[1], exact[1])
    assert low[2].dtype == torch.bfloat16
    assert torch.equal(low[2], exact[2].bfloat16())  # fp32 inside, one rounding at the end


def test_bf16_keeps_global_tokens_equal_and_semantic_tokens_close_to_fp32(
    tiny_model_dir: Path, bf16: BiCodecTokenizer
) -> None:
    clips = [speech_like(s, 16000, seed=20 + i).astype(np.float32) for i, s in enumerate([2, 3])]
    exact = BiCodecTokenizer.load(tiny_model_dir).tokenize(clips)
    low = bf16.tokenize(clips)
    same = total = 0
    for a, b in zip(exact, low, strict=True):
        assert isinstance(a, Tokens) and isinstance(b, Tokens)
        assert len(a.semantic_tokens) == len(b.semantic_tokens)
        assert a.global_tokens == b.global_tokens  # the speaker path runs in fp32
        same += sum(x == y for x, y in zip(a.semantic_tokens, b.semantic_tokens, strict=True))
        total += len(a.semantic_tokens)
    assert same > 0.5 * total


def test_ieee_fp32_turns_tf32_off_for_matmul_and_cudnn() -> None:
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        assert tf32_enabled()
        use_ieee_fp32()
        assert not tf32_enabled()
        assert torch.backends.cudnn.conv.fp32_precision != "tf32"
        assert torch.backends.cuda.matmul.fp32_precision != "tf32"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn

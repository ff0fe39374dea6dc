"""What fp32 and bf16/fp16 mean here.

fp32 on a GPU is IEEE fp32: PyTorch runs cuDNN convolutions in TF32 by default, which
would move the argmin over 8192 codes and the speaker FSQ cells. Under bf16/fp16
autocast, the steps whose outputs are compared against thresholds or nearest codes (mel,
FFT positional conv, VQ projection and distances, FSQ) run in fp32 islands: autocast
casts the inputs of conv/linear/matmul to the low precision whatever `.float()` was
applied before, so only a region with autocast off stays fp32. The tokenizer runs the
whole speaker path (mel, ECAPA, perceiver, FSQ) in such a region: it costs about 1 % of
the FLOPs and keeps the global tokens those of fp32.
"""

from __future__ import annotations

import contextlib

import torch

from tartok_tui.config import Precision

PRECISIONS = {
    Precision.FP32: torch.float32,
    Precision.BF16: torch.bfloat16,
    Precision.FP16: torch.float16,
}
"""The dtype of each precision the run accepts (config.Precision is the one list)."""


def use_ieee_fp32() -> None:
    """Turn TF32 off for CUDA matmuls and cuDNN convolutions: process-wide settings, so
    every model of the process gets them. Set with the legacy flags: in PyTorch 2.11,
    setting the new `fp32_precision` attributes makes reading `cudnn.allow_tf32` raise."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def tf32_enabled() -> bool:
    """True when CUDA matmuls or cuDNN convolutions may run in TF32."""
    return bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)


def fp32_island(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off on `x`'s device type: ops inside run in the dtype of their inputs."""
    return torch.autocast(x.device.type, enabled=False)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The model's autocast region for `precision` (none for fp32)."""
    if precision == Precision.FP32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[Precision(precision)])

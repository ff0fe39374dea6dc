"""Failures of a model call: a lost device is raised (never a clip's record), out of memory is
retried on halves after the failed batch's memory is freed, a bad clip is recorded alone."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from codec_support import speech_like

from tartok_tui.codec.batch import pack
from tartok_tui.codec.errors import ClipOutOfMemory, DeviceFailure
from tartok_tui.codec.failures import classify
from tartok_tui.codec.tokenizer import BiCodecTokenizer, TokenizeError, Tokens

CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)
LOST = "CUDA error: an illegal memory access was encountered"


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    tokenizer = BiCodecTokenizer.load(tiny_model_dir, streams=2)
    yield tokenizer
    tokenizer.close()


@pytest.fixture
def clips() -> list[np.ndarray]:
    return [
        speech_like(s, 16000, seed=i).astype(np.float32) for i, s in enumerate([1.0, 2.0, 0.6, 3.0])
    ]


@pytest.fixture(autouse=True)
def _no_hooks(tok: BiCodecTokenizer):
    yield
    tok.fault_hook = None
    tok.progress_hook = None


def _one_batch(tok: BiCodecTokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tok, "plan_batches", lambda lengths: [list(range(len(lengths)))])


# -- classification ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "device", "kind"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), CUDA, "oom"),
        (RuntimeError("CUDA error: out of memory"), CUDA, "oom"),
        (RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"), CUDA, "oom"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: out of memory"), CPU, "oom"),
        (RuntimeError(LOST), CUDA, "device"),
        (RuntimeError(LOST), CPU, "device"),
        (RuntimeError("CUDA error: device-side assert triggered"), CPU, "device"),
        (RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling cublasSgemm"), CPU, "device"),
        (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"), CUDA, "device"),
        (
            RuntimeError("out of memory ... an illegal memory access was encountered"),
            CUDA,
            "device",
        ),
        (RuntimeError("shape mismatch in a kernel"), CUDA, "device"),
        (ValueError("unexpected value"), CUDA, "device"),
        (RuntimeError("shape mismatch in a kernel"), CPU, "model"),
        (ValueError("unexpected value"), CPU, "model"),
    ],
)
def test_errors_are_classified_by_what_they_mean_for_the_device(
    exc: BaseException, device: torch.device, kind: str
) -> None:
    assert classify(exc, device).kind == kind


def test_an_accelerator_error_means_a_lost_device_on_any_device() -> None:
    error = getattr(torch, "AcceleratorError", None)
    if error is None:
        pytest.skip("this torch has no AcceleratorError")
    assert classify(error("unspecified launch failure"), CPU).kind == "device"
    assert classify(error("Xid 79: GPU has fallen off the bus"), CUDA).kind == "device"


# -- a lost device ----------------------------------------------------------------------------


def _lost_device_error() -> RuntimeError:
    error = getattr(torch, "AcceleratorError", None)
    return error(LOST) if error is not None else RuntimeError(LOST)


@pytest.mark.parametrize("raised", ["accelerator", "message"])
def test_a_lost_device_is_raised_out_of_tokenize_many_never_recorded(
    tok: BiCodecTokenizer, clips: list[np.ndarray], raised: str
) -> None:
    calls: list[int] = []

    def hook(n: int) -> None:
        calls.append(n)
        raise _lost_device_error() if raised == "accelerator" else RuntimeError(LOST)

    tok.fault_hook = hook
    with pytest.raises(DeviceFailure, match="illegal memory access"):
        tok.tokenize_many(clips)
    # Not split to find "the bad clip": the first failure ends the batch's work.
    assert all(n == 1 for n in calls) and len(calls) <= len(clips)


def test_a_lost_device_fails_the_submitted_future(
    tok: BiCodecTokenizer, clips: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    _one_batch(tok, monkeypatch)
    calls: list[int] = []

    def hook(n: int) -> None:
        calls.append(n)
        raise RuntimeError(LOST)

    tok.fault_hook = hook
    future = tok.submit(clips)
    with pytest.raises(DeviceFailure) as err:
        future.result()
    assert calls == [len(clips)]  # no retry on halves
    assert isinstance(err.value.__cause__, RuntimeError)


def test_on_a_gpu_any_error_but_oom_and_audio_is_a_device_failure(
    tok: BiCodecTokenizer, clips: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The classification looks at the device; the batch is packed for the CPU and the hook
    # fails before anything would run on the (absent) GPU.
    monkeypatch.setattr(tok, "device", CUDA)
    monkeypatch.setattr(tok, "_pack", lambda c: pack(c, tok.config.ref_segment_length, False))

    def hook(n: int) -> None:
        raise RuntimeError("an unexplained failure")

    tok.fault_hook = hook
    with pytest.raises(DeviceFailure, match="unexplained"):
        tok.tokenize_many(clips[:1])


def test_a_model_error_on_the_cpu_is_recorded_for_its_clip_only(
    tok: BiCodecTokenizer, clips: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    _one_batch(tok, monkeypatch)
    real = tok._run
    bad_length = len(clips[2])

    def run(batch):
        if bad_length in batch.lengths:
            raise RuntimeError("a kernel rejects this clip")
        return real(batch)

    monkeypatch.setattr(tok, "_run", run)
    out = tok.tokenize_many(clips)
    assert isinstance(out[2], TokenizeError) and out[2].stage == "model"
    assert "a kernel rejects this clip" in out[2].reason
    assert all(isinstance(out[i], Tokens) for i in (0, 1, 3))


def test_tokens_out_of_range_are_a_model_error_never_tokens(
    tok: BiCodecTokenizer, clips: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    _one_batch(tok, monkeypatch)
    fsq = tok.bicodec.speaker_encoder.quantizer
    real = fsq._indices
    poisoned = len(clips[1])

    def indices(z: torch.Tensor) -> torch.Tensor:
        out = real(z)
        if poisoned in current:
            # A NaN in the speaker path: FSQ's int cast of NaN is far out of range.
            out[current.index(poisoned)] = torch.iinfo(torch.int32).min
        return out

    current: list[int] = []
    real_run = tok._run

    def run(batch):
        current[:] = batch.lengths
        return real_run(batch)

    monkeypatch.setattr(fsq, "_indices", indices)
    monkeypatch.setattr(tok, "_run", run)
    out = tok.tokenize_many(clips)
    assert isinstance(out[1], TokenizeError) and out[1].stage == "model"
    assert "global token out of [0, 4096)" in out[1].reason
    assert all(isinstance(out[i], Tokens) for i in (0, 2, 3))


def test_non_finite_features_are_a_model_error_never_tokens(
    tok: BiCodecTokenizer, clips: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """NaN quantizes to a valid index (argmin over NaN), so the range check cannot see it:
    the copy back carries a finite flag per clip. Padding is not the clip's."""
    _one_batch(tok, monkeypatch)
    clean = tok.tokenize_many(clips)
    encoder, speaker = tok.bicodec.encoder, tok.bicodec.speaker_encoder
    real_encode, real_latents = encoder.forward, speaker.latents
    shortest = min(range(len(clips)), key=lambda i: len(clips[i]))
    assert shortest not in (1, 3)

    def encode(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        z = real_encode(x, mask)
        z[1, :, 0] = float("nan")  # clip 1: in its own frames (fp16 overflow, a bad GPU)
        z[shortest, :, -1] = float("inf")  # the shortest clip: in its padding only
        return z

    def latents(mel: torch.Tensor) -> torch.Tensor:
        out = real_latents(mel)
        out[3, 0, 0] = float("nan")  # clip 3: in the speaker path
        return out

    monkeypatch.setattr(encoder, "forward", encode)
    monkeypatch.setattr(speaker, "latents", latents)
    out = tok.tokenize_many(clips)
    for i in (1, 3):
        assert isinstance(out[i], TokenizeError) and out[i].stage == "model"
        assert "non-finite features" in out[i].reason
    assert out[0] == clean[0] and out[shortest] == clean[shortest]


# -- out of memory ----------------------------------------------------------------------------


def test_out_of_memory_frees_the_failed_batch_before_the_halves_run(
    tok: BiCodecTokenizer, clips: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failed call's frame holds a large buffer, as a real failed forward holds its
    activations through the traceback; it must be gone, and cleanup() done, before the
    first half starts."""
    _one_batch(tok, monkeypatch)
    held: list[weakref.ref] = []
    events: list[str] = []
    real_cleanup = tok.cleanup

    def cleanup() -> None:
        events.append("cleanup")
        real_cleanup()

    def hook(n: int) -> None:
        alive = sum(ref() is not None for ref in held)
        events.append(f"call {n}, {alive} failed buffers alive")
        if n > 1:
            activations = torch.ones(4 << 20)  # 16 MiB, referenced by this frame only
            held.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(tok, "cleanup", cleanup)
    tok.fault_hook = hook
    out = tok.tokenize_many(clips)
    assert all(isinstance(r, Tokens) for r in out)
    assert events == [
        "call 4, 0 failed buffers alive",
        "cleanup",
        "call 2, 0 failed buffers alive",
        "cleanup",
        "call 1, 0 failed buffers alive",
        "call 1, 0 failed buffers alive",
        "call 2, 0 failed buffers alive",
        "cleanup",
        "call 1, 0 failed buffers alive",
        "call 1, 0 failed buffers alive",
    ]
    gc.collect()
    assert len(held) == 3 and all(ref() is None for ref in held)


def test_a_clip_that_never_fits_alone_is_raised_never_recorded(
    tok: BiCodecTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of memory alone depends on the allocator and the device's other tenants, not on
    the clip: no record, whether tokenized in place or through a submitted future."""
    _one_batch(tok, monkeypatch)
    clips = [speech_like(s, 16000, seed=i).astype(np.float32) for i, s in enumerate([1, 2, 30, 3])]
    real = tok._run
    calls: list[int] = []
    cleanups: list[int] = []
    real_cleanup = tok.cleanup

    def run(batch):
        calls.append(len(batch.lengths))
        if len(batch.lengths) > 1 or batch.longest > 20 * 16000:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(batch)

    def cleanup() -> None:
        cleanups.append(len(calls))
        real_cleanup()

    monkeypatch.setattr(tok, "_run", run)
    monkeypatch.setattr(tok, "cleanup", cleanup)
    with pytest.raises(ClipOutOfMemory, match=r"a 30\.0 s clip does not fit even alone"):
        tok.tokenize_many(clips)
    assert calls[0] == 4 and calls[-1] == 1 and max(calls[1:]) <= 2
    assert cleanups[-1] == len(calls)  # freed after the lone clip failed, before raising
    calls.clear()
    with pytest.raises(ClipOutOfMemory):
        tok.submit(clips).result()
    assert not issubclass(ClipOutOfMemory, DeviceFailure)  # never a lost device either


def test_a_too_short_clip_is_recorded_without_running_the_model_on_it(
    tok: BiCodecTokenizer, clips: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    _one_batch(tok, monkeypatch)
    sizes: list[int] = []
    tok.fault_hook = sizes.append
    out = tok.tokenize_many([clips[0], np.zeros(399, np.float32), clips[1]])
    assert isinstance(out[1], TokenizeError) and out[1].stage == "too_short"
    assert sizes == [2]  # the two good clips in one call

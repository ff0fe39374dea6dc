"""BiCodecTokenizer: prepared 16 kHz clips -> (32 global tokens, 50/s semantic tokens).

Exact batching: a clip's tokens do not depend on what else is in its batch. Each clip is
normalised on its own samples, wav2vec2 gets the attention mask, padded frames are zeroed
before every time convolution, and outputs are cut to each clip's own token count.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tartok_tui.audio import MIN_SAMPLES, AudioError, prepare_audio
from tartok_tui.codec.allocator import release_free_memory
from tartok_tui.codec.batch import (
    HostBatch,
    PreparedClip,
    as_prepared,
    pack,
    plan_padded,
    prepare_clip,
)
from tartok_tui.codec.cuda_driver import cuda_unavailable_reason
from tartok_tui.codec.errors import ClipOutOfMemory, DeviceFailure
from tartok_tui.codec.failures import HANDLED, Failure, classify
from tartok_tui.codec.feature_encoder import SemanticEncoder
from tartok_tui.codec.model_dir import (
    ModelDirConfig,
    ModelDirError,
    check_configs,
    load_bicodec_state,
    load_wav2vec2,
    read_config,
    read_wav2vec2_settings,
)
from tartok_tui.codec.precision import PRECISIONS, autocast, fp32_island, use_ieee_fp32
from tartok_tui.codec.quantizer import FactorizedVQ
from tartok_tui.codec.speaker import SpeakerTokenizer, mel_transform
from tartok_tui.codec.wav2vec import SemanticFeatures
from tartok_tui.stages import Stage

log = logging.getLogger(__name__)

Clip = PreparedClip | np.ndarray
"""What the tokenizer takes: prepare()'s result, or a float32 16 kHz array (N,)."""

HOP = 320


@dataclass(frozen=True)
class Tokens:
    global_tokens: list[int]
    semantic_tokens: list[int]


class TokenizeError(Exception):
    """A clip the model could not tokenize (its audio, or stage "model"); recorded, not
    raised."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


def _finite_rows(z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B,) bool: every value of each clip's own frames of ``z`` (B, C, T) is finite; the
    padding (``mask`` (B, 1, T) zero) is not the clip's."""
    finite = torch.isfinite(z)
    if mask is not None:
        finite = finite | (mask == 0)
    return finite.flatten(1).all(1)


def token_count(num_samples: int) -> int:
    """Semantic tokens for a 16 kHz clip: one per 320-sample hop of the 400-sample field."""
    return (num_samples - MIN_SAMPLES) // HOP + 1


class BiCodecModel(nn.Module):
    """The tokenizer half of BiCodec; attribute names match the official state dict."""

    def __init__(self, section: dict) -> None:
        super().__init__()
        enc = section["encoder"]
        self.encoder = SemanticEncoder(
            enc["input_channels"],
            enc["vocos_dim"],
            enc["vocos_intermediate_dim"],
            enc["vocos_num_layers"],
            enc["out_channels"],
            enc.get("sample_ratios", [1, 1]),
        )
        q = section["quantizer"]
        self.quantizer = FactorizedVQ(q["input_dim"], q["codebook_size"], q["codebook_dim"])
        spk = section["speaker_encoder"]
        self.speaker_encoder = SpeakerTokenizer(
            spk["input_dim"],
            spk["latent_dim"],
            spk["token_num"],
            spk["fsq_levels"],
            spk.get("fsq_num_quantizers", 1),
        )
        self.mel_transformer = mel_transform(section["mel_params"])
        self.global_count = int(spk["token_num"])
        self.global_codes = self.speaker_encoder.quantizer.codebook_size
        self.semantic_codes = int(q["codebook_size"])


def resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} requested but {cuda_unavailable_reason(torch.version.cuda)}"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r} (cpu, cuda[:n] or auto)")
    return dev


def default_streams(device: torch.device, threads: int | None = None) -> int:
    """Batches run at once: one single-threaded stream per torch thread on the CPU, where a
    clip on one core needs no barrier between cores at every op (on 2 cores about even with
    one clip over both: benchmarks/bench_runtime.py); one on a GPU, which batching fills."""
    if device.type != "cpu":
        return 1
    return max(1, threads if threads is not None else torch.get_num_threads())


class BiCodecTokenizer:
    """Load with `BiCodecTokenizer.load(model_dir)`; see tokenize(), tokenize_many(), submit().

    With `streams` > 1 (the CPU default), tokenize_many() runs that many batches at once on
    threads of its own, each with an equal share of the torch threads; submit() runs one
    batch on such a thread. Weights are shared: a stream costs only its activations. On a
    GPU there is one stream (no CUDA streams: batching fills the device).

    A failure is reported in one of three ways: a clip's bad audio or a model error on the
    CPU is a TokenizeError in that clip's place; out of memory splits the batch and retries
    (a clip that does not fit alone raises ClipOutOfMemory); a device that is gone raises
    DeviceFailure (codec/failures.py says which errors mean that).
    """

    def __init__(
        self,
        config: ModelDirConfig,
        semantic: SemanticFeatures,
        bicodec: BiCodecModel,
        device: torch.device,
        precision: str,
        batch_seconds: float,
        streams: int = 1,
    ) -> None:
        if streams < 1:
            raise ValueError(f"streams must be at least 1, got {streams}")
        if device.type == "cuda" and streams > 1:
            log.warning(
                "%d streams asked for on %s: a GPU runs one (batching fills it)", streams, device
            )
            streams = 1
        self.config = config
        self.sample_rate = config.sample_rate
        self.semantic = semantic
        self.bicodec = bicodec
        self.device = device
        self.precision = precision
        self.batch_seconds = batch_seconds
        self.streams = streams
        self.threads_per_stream = max(1, torch.get_num_threads() // streams)
        self.fault_hook: Callable[[int], None] | None = None
        """Called on the stream thread at the start of every model call with the batch size
        (fault injection in tests); what it raises is classified like a model error."""
        self.progress_hook: Callable[[], None] | None = None
        """Called on the stream thread after each wav2vec2 layer and after the encoder, the
        quantizer and the speaker path of every batch: the model is making progress. On a
        GPU it marks work queued, which stops when the device stops taking work."""
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._in_stream = threading.local()

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        batch_seconds: float = 240.0,
        streams: int | None = None,
    ) -> BiCodecTokenizer:
        """Validate and load the model dir; ModelDirError says what is wrong with it.

        `streams`: batches run at once (None: default_streams(), one per CPU thread; 1 on a
        GPU whatever is asked). On a GPU this turns TF32 off for the whole process."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        dev = resolve_device(device)
        if precision == "fp16" and dev.type != "cuda":
            raise ValueError("fp16 is only supported on CUDA")
        cfg = read_config(Path(model_dir))
        settings = read_wav2vec2_settings(cfg, max(SemanticFeatures.LAYERS))
        check_configs(cfg, settings)
        try:
            bicodec = BiCodecModel(cfg.audio_tokenizer)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelDirError(
                f"unusable audio_tokenizer section: {exc}", cfg.root / "BiCodec" / "config.yaml"
            ) from exc
        expected = {k: v.shape for k, v in bicodec.state_dict().items()}
        state = load_bicodec_state(cfg, expected)
        bicodec.load_state_dict(state, strict=False)  # strictness enforced by check_state

        _, semantic = load_wav2vec2(cfg, max(SemanticFeatures.LAYERS), settings)

        if dev.type == "cuda":
            # Every precision: the fp32 islands of bf16/fp16 must be IEEE too.
            use_ieee_fp32()
        for module in (semantic, bicodec):
            module.eval().requires_grad_(False).to(dev)
        semantic.prepare()
        if streams is None:
            streams = default_streams(dev)
        return cls(cfg, semantic, bicodec, dev, precision, batch_seconds, streams)

    def warm_up(self, seconds: float = 2.0) -> None:
        """Tokenize a synthetic clip on every stream and check the tokens' shape and range.

        A model that cannot run (a broken install, a device that fails) is found here,
        before it is given any data; and the first real clips do not pay for the stream
        threads, kernel set-up and first memory the runtime needs. RuntimeError if it fails
        (DeviceFailure for a device that is gone).
        """
        n = max(MIN_SAMPLES, int(seconds * self.sample_rate))
        t = np.arange(n, dtype=np.float64) / self.sample_rate
        rng = np.random.default_rng(0)
        wav = 0.3 * np.sin(2 * np.pi * (150 + 200 * t) * t) + 0.05 * rng.standard_normal(n)
        clips = [wav.astype(np.float32)] * self.streams
        for result in self.tokenize_many(clips):
            if not isinstance(result, Tokens):
                raise RuntimeError(f"self-test clip failed: {result}")
            if len(result.semantic_tokens) != token_count(n) or not result.global_tokens:
                raise RuntimeError(
                    f"self-test clip gave {len(result.semantic_tokens)} semantic and "
                    f"{len(result.global_tokens)} global tokens for {n} samples"
                )

    # -- preparation -------------------------------------------------------------------------

    def prepare(self, data: bytes, max_seconds: float | None = None) -> PreparedClip:
        """Audio bytes -> a PreparedClip (len() = samples at 16 kHz), as the official
        tokenizer prepares it: decoded, resampled, volume-normalised, then normalised for
        wav2vec2 and cut to the speaker reference. Runs on the caller's thread (the worker's
        decode threads), so none of this is left between two model batches."""
        wav = prepare_audio(
            data,
            sample_rate=self.sample_rate,
            volume_normalize=self.config.volume_normalize,
            max_seconds=max_seconds,
        )
        return prepare_clip(wav, self.config.ref_segment_length)

    def plan_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices into `lengths`, grouped so each batch's padded size fits `batch_seconds`.

        On the CPU every clip is its own batch: padded batches measured slower there than
        single clips, and batching buys nothing without a wide device to fill.
        """
        if self.device.type == "cpu":
            return [[i] for i in sorted(range(len(lengths)), key=lambda i: -lengths[i])]
        return plan_padded(lengths, self.batch_seconds * self.sample_rate)

    # -- the model ---------------------------------------------------------------------------

    def tokenize(self, clips: Sequence[Clip]) -> list[Tokens | TokenizeError]:
        """One batch -> a result per clip: Tokens, or a TokenizeError of stage "model" for
        a clip whose tokens came out of range or from non-finite features (never written as
        tokens). Raises what the model raises; AudioError for a clip under 400 samples."""
        if not clips:
            return []
        prepared = self._prepared(clips)
        for clip in prepared:
            if len(clip) < MIN_SAMPLES:
                raise AudioError(Stage.TOO_SHORT, f"{len(clip)} samples < {MIN_SAMPLES}")
        return self._run(self._pack(prepared))

    def _prepared(self, clips: Sequence[Clip]) -> list[PreparedClip]:
        return [as_prepared(c, self.config.ref_segment_length) for c in clips]

    def _pack(self, clips: Sequence[PreparedClip]) -> HostBatch:
        return pack(clips, self.config.ref_segment_length, pin=self.device.type == "cuda")

    def _progress(self) -> None:
        if self.progress_hook is not None:
            self.progress_hook()

    def _run(self, batch: HostBatch) -> list[Tokens | TokenizeError]:
        if self.fault_hook is not None:
            self.fault_hook(len(batch.lengths))
        model = self.bicodec
        with torch.inference_mode(), autocast(self.device, self.precision):
            lengths, samples, refs = batch.to(self.device)
            padded = batch.padded
            hook = self.progress_hook
            feats = self.semantic(samples, lengths if padded else None, hook)  # (B, T, C)
            mask = None
            if padded:
                frames = torch.div(lengths - MIN_SAMPLES, HOP, rounding_mode="floor") + 1
                t = torch.arange(feats.shape[1], device=self.device)
                mask = (t[None, :] < frames[:, None]).to(feats.dtype).unsqueeze(1)  # (B, 1, T)
            z = model.encoder(feats.transpose(1, 2), mask)
            self._progress()
            semantic = model.quantizer(z)  # (B, T)
            self._progress()
            # The whole speaker path in fp32 whatever the precision: about 1 % of the FLOPs
            # (3.1 GFLOP per clip against 28 per audio second), and global tokens then do not
            # depend on the precision (in bf16, 31 of 32 tokens stayed equal on average but
            # most clips had at least one that moved).
            speaker = model.speaker_encoder
            with fp32_island(refs):
                mel = model.mel_transformer(refs)  # (B, n_mels, frames)
                latents = speaker.latents(mel)  # (B, G, latent_dim)
                global_tokens = speaker.quantizer(latents)  # (B, G)
            self._progress()
            # Non-finite features (fp16 overflow, a faulty device) still quantize to valid
            # indices (argmin over NaN): a flag per clip says so, in the same copy back.
            finite = _finite_rows(z, mask) & torch.isfinite(latents).flatten(1).all(1)
            # One copy back for both kinds of tokens and the flag.
            device_rows = torch.cat(
                [
                    semantic.to(torch.int64),
                    global_tokens.to(torch.int64),
                    finite.to(torch.int64).unsqueeze(1),
                ],
                1,
            )
            rows = device_rows.cpu().numpy()
        return self._results(rows, semantic.shape[1], batch.lengths)

    def _results(
        self, rows: np.ndarray, width: int, lengths: list[int]
    ) -> list[Tokens | TokenizeError]:
        """Split the copied rows (semantic tokens, global tokens, the finite flag) into each
        clip's tokens, checked for count, finite features and range."""
        model = self.bicodec
        out: list[Tokens | TokenizeError] = []
        for row, n in zip(rows, lengths, strict=True):
            count = token_count(n)
            semantic, global_, finite = row[:count], row[width:-1], row[-1]
            problem = None
            if width < count or len(global_) != model.global_count:
                problem = (
                    f"{min(width, count)} semantic and {len(global_)} global tokens, "
                    f"expected {count} and {model.global_count}"
                )
            elif not finite:
                problem = "non-finite features (NaN or infinity) before quantization"
            elif semantic.min() < 0 or semantic.max() >= model.semantic_codes:
                problem = f"semantic token out of [0, {model.semantic_codes})"
            elif global_.min() < 0 or global_.max() >= model.global_codes:
                problem = f"global token out of [0, {model.global_codes})"
            if problem is not None:
                out.append(TokenizeError(Stage.MODEL, f"invalid tokens: {problem}"))
            else:
                out.append(Tokens(global_.tolist(), semantic.tolist()))
        return out

    def tokenize_many(
        self, clips: Sequence[Clip], parallel: bool = True
    ) -> list[Tokens | TokenizeError]:
        """Plan batches, tokenize each; results in input order.

        A clip under 400 samples, or one whose tokens fail the checks, gets a TokenizeError
        in its place; out of memory splits the batch until the clip that does not fit is
        alone (then ClipOutOfMemory is raised); on the CPU a model error is also split down
        to its clip ("model"). DeviceFailure and ClipOutOfMemory are raised after every
        batch already started has ended.
        With several streams (and `parallel`) the batches run concurrently, longest first.
        """
        prepared = self._prepared(clips)
        results: list[Tokens | TokenizeError | None] = [None] * len(prepared)
        plan = self.plan_batches([len(c) for c in prepared])
        if parallel and self.streams > 1 and len(plan) > 1 and not self._on_stream():
            pool = self._executor()
            futures = [pool.submit(self._tokenize_split, [prepared[i] for i in b]) for b in plan]
            wait(futures)  # none left running when one raises
            done = [(b, f.result()) for b, f in zip(plan, futures, strict=True)]
        else:
            done = [(b, self._tokenize_split([prepared[i] for i in b])) for b in plan]
        for batch, batch_results in done:
            for i, result in zip(batch, batch_results, strict=True):
                results[i] = result
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def submit(self, clips: Sequence[Clip]) -> Future[list[Tokens | TokenizeError]]:
        """tokenize_many(clips) on a stream thread; up to `streams` run at once.

        The host side is done here, on the calling thread, before the work is queued:
        clips are planned and packed into their host buffers (pinned on a GPU). A caller
        that keeps one more call submitted than there are streams thus packs the next
        batch while the current one runs, and the device starts it as soon as it is free.
        The future raises DeviceFailure when the device is gone, ClipOutOfMemory when a
        clip does not fit alone.
        """
        prepared = self._prepared(clips)
        plan = self.plan_batches([len(c) for c in prepared])
        packed = [self._pack_ahead([prepared[i] for i in b]) for b in plan]
        return self._executor().submit(self._run_planned, len(prepared), plan, packed)

    def _pack_ahead(self, clips: list[PreparedClip]) -> tuple[list[PreparedClip], HostBatch | None]:
        if any(len(c) < MIN_SAMPLES for c in clips):
            return clips, None  # found and recorded by the split on the stream thread
        try:
            return clips, self._pack(clips)
        except HANDLED:
            # Not lost: the stream thread packs again and classifies what it raises.
            log.warning("packing ahead failed; the stream thread will retry", exc_info=True)
            return clips, None

    def _run_planned(
        self,
        n: int,
        plan: list[list[int]],
        packed: list[tuple[list[PreparedClip], HostBatch | None]],
    ) -> list[Tokens | TokenizeError]:
        results: list[Tokens | TokenizeError | None] = [None] * n
        for batch, (clips, host) in zip(plan, packed, strict=True):
            for i, result in zip(batch, self._tokenize_split(clips, host), strict=True):
                results[i] = result
        return results  # type: ignore[return-value]

    def _tokenize_split(
        self, clips: Sequence[PreparedClip], packed: HostBatch | None = None
    ) -> list[Tokens | TokenizeError]:
        short = [len(c) < MIN_SAMPLES for c in clips]
        if any(short):
            long = [c for c, s in zip(clips, short, strict=True) if not s]
            done = iter(self._tokenize_split(long) if long else [])
            return [
                TokenizeError(Stage.TOO_SHORT, f"{len(c)} samples < {MIN_SAMPLES}")
                if s
                else next(done)
                for c, s in zip(clips, short, strict=True)
            ]
        outcome = self._attempt(clips, packed)
        if not isinstance(outcome, Failure):
            return outcome
        # Here, outside the except block, the failed call's frames and tensors are gone:
        # memory freed now is really free for the halves.
        if outcome.kind == "oom":
            self.cleanup()
        # Out of memory depends on the batch; a model error on the CPU is the clip's own
        # (the kernels are deterministic and batches there are single clips anyway), so
        # splitting finds the clip at the cost of re-running its neighbours once or twice.
        if len(clips) > 1:
            half = len(clips) // 2
            return self._tokenize_split(clips[:half]) + self._tokenize_split(clips[half:])
        if outcome.kind == "oom":  # alone: the device's state, not the clip's fault
            seconds = len(clips[0]) / self.sample_rate
            raise ClipOutOfMemory(
                f"{self.device}: a {seconds:.1f} s clip does not fit even alone: {outcome.reason}"
            )
        assert outcome.stage is not None  # a lost device was raised by _attempt
        return [TokenizeError(outcome.stage, outcome.reason)]

    def _attempt(
        self, clips: Sequence[PreparedClip], packed: HostBatch | None
    ) -> list[Tokens | TokenizeError] | Failure:
        """Run the batch; a Failure (kind and message only) when it fails in a way that
        is retried or recorded. DeviceFailure when the device is gone."""
        try:
            return self._run(packed if packed is not None else self._pack(clips))
        except HANDLED as exc:
            failure = classify(exc, self.device)
            if failure.kind == "device":
                raise DeviceFailure(f"{self.device}: {failure.reason}") from exc
            return failure

    def _on_stream(self) -> bool:
        return getattr(self._in_stream, "active", False)

    def _start_stream(self) -> None:
        # Torch's thread count is per calling thread for OpenMP and MKL: set it in each
        # stream thread, or a new thread would use every core and oversubscribe them.
        torch.set_num_threads(self.threads_per_stream)
        self._in_stream.active = True

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.streams, thread_name_prefix="stream", initializer=self._start_stream
                )
            return self._pool

    def close(self) -> None:
        """Stop the stream threads (they are started again if needed)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def cleanup(self) -> None:
        """Free cached memory (after an OOM, or when the memory guard asks)."""
        gc.collect()
        release_free_memory()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

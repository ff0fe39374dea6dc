"""BiCodecTokenizer: prepared 16 kHz clips -> (32 global tokens, 50/s semantic tokens).

Exact batching: a clip's tokens do not depend on what else is in its batch. Each clip is
normalised on its own samples, wav2vec2 gets the attention mask, padded frames are zeroed
before every time convolution, and outputs are cut to each clip's own token count.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tartok_tui.audio import MIN_SAMPLES, AudioError, prepare_audio, reference_clip
from tartok_tui.codec.allocator import release_free_memory
from tartok_tui.codec.feature_encoder import SemanticEncoder
from tartok_tui.codec.model_dir import (
    ModelDirConfig,
    ModelDirError,
    load_bicodec_state,
    load_wav2vec2,
    read_config,
)
from tartok_tui.codec.quantizer import FactorizedVQ
from tartok_tui.codec.speaker import SpeakerTokenizer, mel_transform
from tartok_tui.codec.wav2vec import SemanticFeatures

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Tokens:
    global_tokens: list[int]
    semantic_tokens: list[int]


class TokenizeError(Exception):
    """A clip the model could not tokenize (stage "oom" or "model"); recorded, not raised."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


def token_count(num_samples: int) -> int:
    """Semantic tokens for a 16 kHz clip: one per 320-sample hop of the 400-sample field."""
    return (num_samples - MIN_SAMPLES) // 320 + 1


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


def resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r} (cpu, cuda[:n] or auto)")
    return dev


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def default_streams(device: torch.device, threads: int | None = None) -> int:
    """Batches run at once: one single-threaded stream per torch thread on the CPU, where a
    clip on one core needs no barrier between cores at every op (on 2 cores about even with
    one clip over both: benchmarks/bench_runtime.py); one on a GPU, which batching fills."""
    if device.type != "cpu":
        return 1
    return max(1, threads if threads is not None else torch.get_num_threads())


class BiCodecTokenizer:
    """Load with `BiCodecTokenizer.load(model_dir)`; see tokenize() and tokenize_many().

    With `streams` > 1 (the CPU default), tokenize_many() runs that many batches at once on
    threads of its own, each with an equal share of the torch threads; submit() runs one
    batch on such a thread. Weights are shared: a stream costs only its activations.
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
        (fault injection in tests); what it raises is handled like a model error."""
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

        `streams`: batches run at once (None: default_streams(), one per CPU thread)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        dev = resolve_device(device)
        if precision == "fp16" and dev.type != "cuda":
            raise ValueError("fp16 is only supported on CUDA")
        cfg = read_config(Path(model_dir))
        if cfg.sample_rate != 16000 or cfg.latent_hop_length != 320:
            raise ModelDirError(
                "only 16 kHz models with a 320-sample hop are supported",
                cfg.root / "config.yaml",
                "sample_rate",
            )
        try:
            bicodec = BiCodecModel(cfg.audio_tokenizer)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelDirError(
                f"unusable audio_tokenizer section: {exc}", cfg.root / "BiCodec" / "config.yaml"
            ) from exc
        expected = {k: v.shape for k, v in bicodec.state_dict().items()}
        state = load_bicodec_state(cfg, expected)
        bicodec.load_state_dict(state, strict=False)  # strictness enforced by check_state

        w2v_config, semantic = load_wav2vec2(cfg, max(SemanticFeatures.LAYERS))
        if w2v_config.hidden_size != cfg.audio_tokenizer["encoder"]["input_channels"]:
            raise ModelDirError(
                f"encoder input_channels != wav2vec2 hidden_size {w2v_config.hidden_size}",
                cfg.root / "BiCodec" / "config.yaml",
                "audio_tokenizer.encoder.input_channels",
            )

        for module in (semantic, bicodec):
            module.eval().requires_grad_(False).to(dev)
        for layer in semantic.feature_extractor.conv_layers:
            layer.prepare()
        for layer in semantic.encoder.layers:
            layer.attention.prepare()
        semantic.encoder.pos_conv_embed.prepare()
        if streams is None:
            streams = default_streams(dev)
        return cls(cfg, semantic, bicodec, dev, precision, batch_seconds, streams)

    def warm_up(self, seconds: float = 2.0) -> None:
        """Tokenize a synthetic clip on every stream and check the tokens' shape and range.

        A model that cannot run (a broken install, a device that fails) is found here,
        before it is given any data; and the first real clips do not pay for the stream
        threads, kernel set-up and first memory the runtime needs. RuntimeError if it fails.
        """
        n = max(MIN_SAMPLES, int(seconds * self.sample_rate))
        t = np.arange(n, dtype=np.float64) / self.sample_rate
        rng = np.random.default_rng(0)
        wav = 0.3 * np.sin(2 * np.pi * (150 + 200 * t) * t) + 0.05 * rng.standard_normal(n)
        wavs = [wav.astype(np.float32)] * self.streams
        codes = self.bicodec.quantizer.codebook.num_embeddings
        for result in self.tokenize_many(wavs):
            if not isinstance(result, Tokens):
                raise RuntimeError(f"self-test clip failed: {result}")
            if len(result.semantic_tokens) != token_count(n) or not result.global_tokens:
                raise RuntimeError(
                    f"self-test clip gave {len(result.semantic_tokens)} semantic and "
                    f"{len(result.global_tokens)} global tokens for {n} samples"
                )
            if not all(0 <= c < codes for c in result.semantic_tokens):
                raise RuntimeError("self-test clip gave semantic tokens outside the codebook")

    # -- preparation -------------------------------------------------------------------------

    def prepare(self, data: bytes, max_seconds: float | None = None) -> np.ndarray:
        """Audio bytes -> float32 (N,) at 16 kHz, as the official tokenizer prepares it."""
        return prepare_audio(
            data,
            sample_rate=self.sample_rate,
            volume_normalize=self.config.volume_normalize,
            max_seconds=max_seconds,
        )

    def plan_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices into `lengths`, grouped so each batch's padded size fits `batch_seconds`.

        On the CPU every clip is its own batch: padded batches measured slower there than
        single clips, and batching buys nothing without a wide device to fill.
        """
        order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
        if self.device.type == "cpu":
            return [[i] for i in order]
        budget = self.batch_seconds * self.sample_rate
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            # Sorted longest first, so the first clip of a batch sets its padded length.
            longest = lengths[current[0]] if current else lengths[i]
            if current and (len(current) + 1) * longest > budget:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    # -- the model ---------------------------------------------------------------------------

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])

    def tokenize(self, wavs: Sequence[np.ndarray]) -> list[Tokens]:
        """One batch of prepared clips (each float32 (N_i,), 16 kHz) -> tokens per clip."""
        if not wavs:
            return []
        if self.fault_hook is not None:
            self.fault_hook(len(wavs))
        lengths = [int(w.shape[0]) for w in wavs]
        for n in lengths:
            if n < MIN_SAMPLES:
                raise AudioError("too_short", f"{n} samples < {MIN_SAMPLES}")
        longest = max(lengths)
        batch = np.zeros((len(wavs), longest), dtype=np.float32)
        for row, w in zip(batch, wavs, strict=True):
            w = np.asarray(w, dtype=np.float32)
            # The official feature extractor's normalisation, per clip on its own samples, in
            # float32 numpy, so the rounding is the same.
            row[: w.shape[0]] = (w - w.mean()) / np.sqrt(w.var() + 1e-7)
        ref_len = self.config.ref_segment_length
        refs = np.stack([reference_clip(np.asarray(w, dtype=np.float32), ref_len) for w in wavs])

        with torch.inference_mode(), self._autocast():
            samples = torch.from_numpy(batch).to(self.device)
            padded = any(n != longest for n in lengths)
            feats = self.semantic(samples, lengths if padded else None)  # (B, T, C)
            frames = [token_count(n) for n in lengths]
            mask = None
            if padded:
                t = torch.arange(feats.shape[1], device=self.device)
                mask = (t[None, :] < torch.tensor(frames, device=self.device)[:, None]).to(
                    feats.dtype
                )
                mask = mask.unsqueeze(1)  # (B, 1, T)
            z = self.bicodec.encoder(feats.transpose(1, 2), mask)
            semantic = self.bicodec.quantizer(z.float() if self.precision != "fp32" else z)

            ref = torch.from_numpy(refs).to(self.device)
            with torch.autocast(self.device.type, enabled=False):
                mel = self.bicodec.mel_transformer(ref)  # (B, n_mels, frames)
            global_tokens = self.bicodec.speaker_encoder(mel)

        semantic_rows = semantic.cpu().tolist()
        global_rows = global_tokens.cpu().tolist()
        return [
            Tokens(global_tokens=g, semantic_tokens=s[:t])
            for g, s, t in zip(global_rows, semantic_rows, frames, strict=True)
        ]

    def tokenize_many(
        self, wavs: Sequence[np.ndarray], parallel: bool = True
    ) -> list[Tokens | TokenizeError]:
        """Plan batches, tokenize each; a batch that fails is split until the bad clip is alone.

        CUDA out-of-memory and model errors become a TokenizeError for the clip that still
        fails on its own; the other clips are tokenized. With several streams (and `parallel`)
        the batches run concurrently, longest first; results come back in input order.
        """
        results: list[Tokens | TokenizeError | None] = [None] * len(wavs)
        plan = self.plan_batches([int(w.shape[0]) for w in wavs])
        if parallel and self.streams > 1 and len(plan) > 1 and not self._on_stream():
            pool = self._executor()
            futures = [pool.submit(self._tokenize_split, [wavs[i] for i in b]) for b in plan]
            done = [(b, f.result()) for b, f in zip(plan, futures, strict=True)]
        else:
            done = [(b, self._tokenize_split([wavs[i] for i in b])) for b in plan]
        for batch, batch_results in done:
            for i, result in zip(batch, batch_results, strict=True):
                results[i] = result
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def submit(self, wavs: Sequence[np.ndarray]) -> Future[list[Tokens | TokenizeError]]:
        """tokenize_many(wavs) on one of the stream threads; up to `streams` run at once."""
        return self._executor().submit(self.tokenize_many, wavs, False)

    def _tokenize_split(self, wavs: Sequence[np.ndarray]) -> list[Tokens | TokenizeError]:
        try:
            return list(self.tokenize(wavs))
        except (RuntimeError, AudioError, ValueError) as exc:
            oom = _is_oom(exc)
            if oom:
                self.cleanup()
            if len(wavs) > 1:
                half = len(wavs) // 2
                return self._tokenize_split(wavs[:half]) + self._tokenize_split(wavs[half:])
            if isinstance(exc, AudioError):
                return [TokenizeError(exc.stage, exc.reason)]
            stage = "oom" if oom else "model"
            return [TokenizeError(stage, f"{type(exc).__name__}: {exc}")]

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

"""``tartok-tui decode``: committed tokens back into sound with BiCodec's own decoder.

Writes ``DIR/<key>.wav`` (16 kHz mono, 16-bit PCM; a key with folders gets them), each
written whole (a temporary file renamed into place). Tokens are checked first (32 global
tokens, at least one semantic token, every token inside its codebook): a sample that fails
is reported and skipped, never decoded into noise.

On the CPU clips are decoded one at a time, which gives the reference's samples to the bit;
padded batches agree with it only to float rounding (other kernels for other shapes, the
error growing through the generator's layers: up to 2e-4 on random weights). On a GPU, where
batches are what fills the device, they go in padded batches of up to ``BATCH_SECONDS`` of
audio, each clip's input masked past its end and its audio cut to its own length
(benchmarks/bench_decode.py measures both ways).
"""

from __future__ import annotations

import os
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf
import torch

from tartok_tui.codec.batch import plan_padded
from tartok_tui.codec.decoder import BiCodecDecoder
from tartok_tui.codec.fields import GLOBAL, SAMPLE_RATE, SEMANTIC
from tartok_tui.config import ConfigError
from tartok_tui.decode.select import pick_keys, pick_random, picked_samples
from tartok_tui.output.committed import committed_tokens
from tartok_tui.output.manifest import read_manifest
from tartok_tui.output.samples import Sample
from tartok_tui.storage import Access, Location, redact_location

BATCH_SECONDS = 120.0
"""Padded audio seconds per batch on a GPU."""
WINDOW = 256
"""Samples read ahead and sorted by length before they are batched."""


@dataclass
class DecodeResult:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(key, why) of samples whose tokens could not be decoded."""
    missing: list[str] = field(default_factory=list)
    """Keys asked for that no tokens file holds."""
    audio_seconds: float = 0.0
    model_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.written) and not (self.failed or self.missing)


def wav_path(root: Path, key: str) -> Path:
    """``root/<key>.wav``; ValueError for a key that would land outside ``root``."""
    rel = PurePosixPath(key)
    if not key or rel.is_absolute() or any(p in ("", ".", "..") for p in rel.parts):
        raise ValueError(f"key {key!r} cannot name a file under the output folder")
    return root.joinpath(*rel.parts[:-1], rel.name + ".wav")


def write_wav(path: Path, audio: np.ndarray) -> None:
    """16 kHz mono 16-bit PCM, written to a temporary file and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            sf.write(f, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def token_problem(sample: Sample, decoder: BiCodecDecoder) -> str | None:
    """Why ``sample``'s tokens cannot be decoded by ``decoder``, or None."""
    glob, sem = sample.tokens[GLOBAL.name], sample.tokens[SEMANTIC.name]
    if len(glob) != decoder.global_count:
        return f"{len(glob)} global tokens, the decoder takes {decoder.global_count}"
    if not sem:
        return "no semantic tokens"
    if max(glob) >= decoder.global_codes:
        return f"a global token past the codebook ({max(glob)} >= {decoder.global_codes})"
    if max(sem) >= decoder.semantic_codes:
        return f"a semantic token past the codebook ({max(sem)} >= {decoder.semantic_codes})"
    return None


def _long(tokens: array[int]) -> torch.Tensor:
    """uint16 tokens as the int64 indices the embeddings take."""
    return torch.from_numpy(np.frombuffer(tokens, dtype=np.uint16).astype(np.int64))


def decode_batch(
    decoder: BiCodecDecoder, samples: list[Sample], device: torch.device
) -> list[np.ndarray]:
    """Each sample's audio (float32, frames * hop samples), one padded batch."""
    frames = [len(s.tokens[SEMANTIC.name]) for s in samples]
    semantic = torch.zeros(len(samples), max(frames), dtype=torch.long)
    for row, s in zip(semantic, samples, strict=True):
        row[: len(s.tokens[SEMANTIC.name])] = _long(s.tokens[SEMANTIC.name])
    glob = torch.stack([_long(s.tokens[GLOBAL.name]) for s in samples])
    lengths = torch.tensor(frames) if len(samples) > 1 else None
    with torch.inference_mode():
        audio = decoder(
            glob.to(device), semantic.to(device), None if lengths is None else lengths.to(device)
        )
        audio = audio.float().cpu().numpy()
    return [audio[i, : n * decoder.hop] for i, n in enumerate(frames)]


def _windows(samples: Iterable[Sample]) -> Iterator[list[Sample]]:
    window: list[Sample] = []
    for sample in samples:
        window.append(sample)
        if len(window) >= WINDOW:
            yield window
            window = []
    if window:
        yield window


def decode_samples(
    decoder: BiCodecDecoder,
    samples: Iterable[Sample],
    to: Path,
    device: torch.device,
    on_clip: Callable[[Path], None] | None = None,
) -> DecodeResult:
    """Decode ``samples`` into ``to`` (see the module doc); the result lists what was written
    and what was not."""
    result = DecodeResult()
    budget = BATCH_SECONDS * SAMPLE_RATE / decoder.hop if device.type == "cuda" else 0.0
    for window in _windows(samples):
        good: list[tuple[Sample, Path]] = []
        for sample in window:
            problem = token_problem(sample, decoder)
            try:
                path = wav_path(to, sample.key)
            except ValueError as exc:
                problem = problem or str(exc)
            if problem is not None:
                result.failed.append((sample.key, problem))
            else:
                good.append((sample, path))
        frames = [len(s.tokens[SEMANTIC.name]) for s, _ in good]
        # budget 0 (the CPU): every clip a batch of its own.
        for batch in plan_padded(frames, budget):
            started = time.perf_counter()
            audio = decode_batch(decoder, [good[i][0] for i in batch], device)
            result.model_seconds += time.perf_counter() - started
            for i, wav in zip(batch, audio, strict=True):
                path = good[i][1]
                write_wav(path, wav)
                result.written.append(path)
                result.audio_seconds += len(wav) / SAMPLE_RATE
                if on_clip is not None:
                    on_clip(path)
    return result


def _weights_warning(output: Location, model_dir: Path, access: Access | None) -> list[str]:
    """A warning when the output's tokens were made with other weights than these."""
    from tartok_tui.codec.fingerprint import weights_fingerprint

    try:
        manifest = read_manifest(output, access)
    except ValueError as exc:
        return [f"the output's run manifest is unreadable ({exc}): its weights are not checked"]
    if manifest is None:
        return ["the output has no run manifest: the weights that made its tokens are not known"]
    digest = weights_fingerprint(model_dir).digest
    if digest == manifest.weights:
        return []
    return [
        f"the tokens were made with weights {manifest.weights[:12]}, the model dir holds "
        f"{digest[:12]}: the audio is only right if the decoder halves are the same"
    ]


def run_decode(
    output: Location,
    model_dir: str,
    to: Path,
    *,
    keys: list[str] | None = None,
    count: int = 10,
    seed: int = 0,
    device: str = "auto",
    access: Access | None = None,
    on_clip: Callable[[Path], None] | None = None,
) -> DecodeResult:
    """Decode the chosen samples of ``output`` into ``to``: ``keys``, or a seeded draw of
    ``count`` (see decode/select.py). ConfigError for a bad model, device or output."""
    from tartok_tui.codec.decoder import load_decoder
    from tartok_tui.codec.errors import ModelDirError
    from tartok_tui.codec.tokenizer import resolve_device
    from tartok_tui.hub import ModelSourceError, resolve_model_dir

    files = committed_tokens(output, access).files
    if not files:
        raise ConfigError(f"no committed tokens files in {redact_location(output)}")
    try:
        root = resolve_model_dir(model_dir)
        dev = resolve_device(device)
        decoder = load_decoder(root, dev)
    except (ModelSourceError, ModelDirError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    warnings = _weights_warning(output, root, access)
    missing: list[str] = []
    if keys:
        picks, missing = pick_keys(files, keys, access)
    else:
        picks = pick_random(files, count, seed, access)
    result = decode_samples(decoder, picked_samples(files, picks, access), to, dev, on_clip)
    result.missing = missing
    result.warnings = warnings
    return result

"""Tokenizer throughput: our engine against the reference tokenizer's per-clip loop.

Full-size architecture with random weights (written once to --model-dir when absent), the same
5-15 s speech-like clips for both, timed end to end from encoded bytes (decode, resample,
normalise, model). Prints audio seconds per wall second for both, their ratio, the FLOP-bound
limit (measured fp32 GEMM rate / model FLOPs per audio second) and our fraction of it.

    uv run python benchmarks/bench_codec.py                      # fp32, ours vs reference
    uv run python benchmarks/bench_codec.py --precision bf16     # + bf16 speed and agreement
    uv run python benchmarks/bench_codec.py --stages             # + where our time goes
    python benchmarks/bench_codec.py --device cuda --precision bf16 --skip-reference

The reference is the `spark-tts-lib` dev dependency. Timings on a shared machine are noisy;
the numbers mean something only on an otherwise idle one.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.flop_counter import FlopCounterMode

from tartok_tui.codec.allocator import keep_freed_memory
from tartok_tui.codec.batch import PreparedClip
from tartok_tui.codec.random_model import write_random_model
from tartok_tui.codec.tokenizer import BiCodecTokenizer, Tokens, token_count
from tartok_tui.demo.data import synth_speech

DEFAULT_MODEL_DIR = Path(tempfile.gettempdir()) / "tartok-bench-full-model"


def make_clips(total_seconds: float, seed: int) -> list[bytes]:
    """WAV files (24 kHz, like Emilia's MP3s after decoding) of 5-15 s until the total is reached."""
    rng = np.random.default_rng(seed)
    clips, total = [], 0.0
    while total < total_seconds:
        seconds = float(rng.uniform(5, 15))
        buf = io.BytesIO()
        sf.write(buf, synth_speech(rng, seconds, 24000), 24000, format="WAV", subtype="PCM_16")
        clips.append(buf.getvalue())
        total += seconds
    return clips


def gemm_gflops(
    dtype: torch.dtype = torch.float32,
    seconds: float = 2.0,
    streams: int = 1,
    device: torch.device | None = None,
) -> float:
    """Sustained GEMM rate at transformer-layer shapes (500 frames x 1024 x 4096 on the CPU,
    a 240 s batch's 12000 frames on a GPU), summed over `streams` concurrent GEMMs that share
    the torch threads, as our engine's streams do."""
    if device is not None and device.type == "cuda":
        return _device_gemm_gflops(dtype, seconds, device)
    threads = max(1, torch.get_num_threads() // streams)
    rates = [0.0] * streams

    def probe(slot: int) -> None:
        if streams > 1:
            torch.set_num_threads(threads)  # per thread, as in the engine's stream threads
        a = torch.randn(500, 1024, dtype=dtype)
        b = torch.randn(1024, 4096, dtype=dtype)
        for _ in range(3):
            a @ b
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            n += 1
        rates[slot] = 2 * 500 * 1024 * 4096 * n / (time.perf_counter() - start) / 1e9

    if streams == 1:
        probe(0)
    else:
        workers = [threading.Thread(target=probe, args=(i,)) for i in range(streams)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return sum(rates)


def _device_gemm_gflops(dtype: torch.dtype, seconds: float, device: torch.device) -> float:
    a = torch.randn(12000, 1024, dtype=dtype, device=device)
    b = torch.randn(1024, 4096, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        torch.cuda.synchronize(device)
        n += 10
    return 2 * 12000 * 1024 * 4096 * n / (time.perf_counter() - start) / 1e9


def _addmm_flops(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def model_gflops(tok: BiCodecTokenizer, wavs: list[np.ndarray]) -> float:
    """FLOPs (matmul, conv, attention) our model spends on these clips, in GFLOP."""
    # The conv front end accumulates tap groups with in-place addmm_, which the counter
    # does not know by default; it costs what addmm does.
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_flops})
    with counter:
        for w in wavs:
            tok.tokenize([w])
    return counter.get_total_flops() / 1e9


def our_runner(tok: BiCodecTokenizer) -> Callable[[list[bytes]], list[Tokens]]:
    """Bytes to tokens through the engine's own entry points, a round of clips per call (its
    streams tokenize several clips at once, as in a worker)."""

    def run(clips: list[bytes]) -> list[Tokens]:
        results = tok.tokenize_many([tok.prepare(c) for c in clips])
        assert all(isinstance(r, Tokens) for r in results), results
        return results  # type: ignore[return-value]

    return run


def reference_runner(
    model_dir: Path, device: torch.device
) -> Callable[[list[bytes]], list[Tokens]]:
    """The reference tokenizer, bytes to tokens, one clip at a time (the old script's loop)."""
    import contextlib

    from spark_tts_lib.models.audio_tokenizer import BiCodecTokenizer as Reference

    with contextlib.redirect_stdout(io.StringIO()):  # it lists every decoder tensor it skips
        ref = Reference(str(model_dir), device)

    def run(clips: list[bytes]) -> list[Tokens]:
        results = []
        for clip in clips:
            g, s = ref.tokenize(io.BytesIO(clip))
            results.append(Tokens(g.flatten().tolist(), s.flatten().tolist()))
        return results

    return run


def agreement(a: list[Tokens], b: list[Tokens]) -> tuple[float, float]:
    """(share of semantic tokens equal, share of clips with equal global tokens)."""
    same = total = 0
    for x, y in zip(a, b, strict=True):
        assert len(x.semantic_tokens) == len(y.semantic_tokens)
        same += sum(p == q for p, q in zip(x.semantic_tokens, y.semantic_tokens, strict=True))
        total += len(x.semantic_tokens)
    return same / total, sum(
        x.global_tokens == y.global_tokens for x, y in zip(a, b, strict=True)
    ) / len(a)


def stage_times(tok: BiCodecTokenizer, clips: list[PreparedClip]) -> dict[str, float]:
    """Seconds per stage of our model over the clips, one clip at a time."""
    times = dict.fromkeys(
        ("wav2vec2 conv front end", "wav2vec2 transformer", "encoder + VQ", "speaker"), 0.0
    )
    sem = tok.semantic
    dev = tok.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for clip in clips:
            x = torch.from_numpy(clip.samples)[None].to(dev)
            sync()
            t0 = time.perf_counter()
            frames = sem.feature_extractor(x)
            sync()
            t1 = time.perf_counter()
            h = sem.feature_projection(frames)
            h = h + sem.encoder.pos_conv_embed(h)
            total = None
            for i, layer in enumerate(sem.encoder.layers):
                if i in sem.LAYERS:
                    total = h if total is None else total + h
                h = layer(h, None)
            feats = (total + h) / 3
            sync()
            t2 = time.perf_counter()
            tok.bicodec.quantizer(tok.bicodec.encoder(feats.transpose(1, 2)))
            sync()
            t3 = time.perf_counter()
            ref = torch.from_numpy(clip.reference)[None].to(dev)
            tok.bicodec.speaker_encoder(tok.bicodec.mel_transformer(ref))
            sync()
            t4 = time.perf_counter()
            for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                times[key] += dt
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument(
        "--audio-seconds", type=float, default=120.0, help="total audio to tokenize"
    )
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument(
        "--batch-seconds", type=float, default=240.0, help="padded audio per batch on a GPU"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--streams", type=int, default=None, help="our engine's streams (default: its own)"
    )
    parser.add_argument(
        "--round", type=int, default=6, help="clips per round (runners take turns by round)"
    )
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--stages", action="store_true", help="print where our time goes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    # What a worker does at start-up; process-wide, so the reference gets it as well.
    allocator = "kept (glibc)" if keep_freed_memory() else "default"
    if not (args.model_dir / "wav2vec2-large-xlsr-53" / "pytorch_model.bin").is_file():
        print(f"writing a full-size random model to {args.model_dir} ...", flush=True)
        write_random_model(args.model_dir, "full", seed=args.seed)

    clips = make_clips(args.audio_seconds, args.seed)
    device = torch.device(args.device)
    tok = BiCodecTokenizer.load(
        args.model_dir, device=device, batch_seconds=args.batch_seconds, streams=args.streams
    )
    wavs = [tok.prepare(c) for c in clips]
    audio_s = sum(len(w) for w in wavs) / tok.sample_rate
    print(
        f"{len(clips)} clips, {audio_s:.1f} s of audio on {device}, "
        f"{torch.get_num_threads()} threads; "
        f"ours: {tok.streams} stream(s) x {tok.threads_per_stream} thread(s); "
        f"freed memory: {allocator}",
        flush=True,
    )
    sample = wavs[: max(1, len(wavs) // 4)]
    flops_per_s = model_gflops(tok, sample) / (sum(len(w) for w in sample) / tok.sample_rate)

    runners: dict[str, Callable[[list[bytes]], list[Tokens]]] = {"ours": our_runner(tok)}
    if not args.skip_reference:
        runners["reference"] = reference_runner(args.model_dir, device)
    if args.precision == "bf16":
        runners["ours bf16"] = our_runner(
            BiCodecTokenizer.load(
                args.model_dir,
                device=device,
                precision="bf16",
                batch_seconds=args.batch_seconds,
                streams=args.streams,
            )
        )
    for run in runners.values():
        run(clips[: tok.streams])  # warm-up
    # Round by round, every runner in turn, with a GEMM-rate probe in between: on a shared
    # machine the load then falls on all of them alike.
    results: dict[str, list[Tokens]] = {name: [] for name in runners}
    seconds = dict.fromkeys(runners, 0.0)
    rates = [gemm_gflops(seconds=0.5, streams=tok.streams, device=device)]
    for first in range(0, len(clips), args.round):
        chunk = clips[first : first + args.round]
        for name, run in runners.items():
            start = time.perf_counter()
            results[name].extend(run(chunk))
            seconds[name] += time.perf_counter() - start
        rates.append(gemm_gflops(seconds=0.5, streams=tok.streams, device=device))
    assert [len(r.semantic_tokens) for r in results["ours"]] == [token_count(len(w)) for w in wavs]

    gemm = float(np.mean(rates))
    limit = gemm / flops_per_s
    print(
        f"\nfp32 GEMM rate:              {gemm:8.1f} GFLOP/s (min {min(rates):.0f}, "
        f"max {max(rates):.0f}; {tok.streams} concurrent x {tok.threads_per_stream} thread(s))"
    )
    print(f"model cost:                  {flops_per_s:8.2f} GFLOP per audio second")
    print(f"FLOP-bound limit:            {limit:8.2f} x real time")
    for name, t in seconds.items():
        print(f"{name + ':':28s} {audio_s / t:8.2f} x real time ({t:.1f} s)")
    print(f"ours / FLOP-bound limit:     {audio_s / seconds['ours'] / limit:8.1%}")
    if "reference" in results:
        sem, glob = agreement(results["ours"], results["reference"])
        print(f"ours / reference:            {seconds['reference'] / seconds['ours']:8.2f} x")
        print(f"agreement with reference:    semantic {sem:.4%}, global {glob:.1%} of clips")
    if "ours bf16" in results:
        sem, glob = agreement(results["ours bf16"], results["ours"])
        print(f"bf16 / fp32 speed:           {seconds['ours'] / seconds['ours bf16']:8.2f} x")
        n = len(results["ours"])
        print(
            f"bf16 vs fp32 tokens:         semantic {sem:.2%}, global tokens all equal for "
            f"{round(glob * n)}/{n} clips ({glob:.1%})"
        )

    if args.stages:
        print("\nour time by stage (one clip at a time, fp32):")
        for name, seconds in stage_times(tok, wavs).items():
            print(f"  {name:26s} {seconds:7.2f} s  ({audio_s / seconds:6.1f} x real time)")


if __name__ == "__main__":
    main()

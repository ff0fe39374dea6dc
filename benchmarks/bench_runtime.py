"""How a CPU worker runs the engine: streams x threads, and freed memory kept or not.

Each setting runs in a fresh process (the allocator setting is process-wide and has to be
made before threads allocate) over the same 5-15 s clips, full-size random-weight model;
prints speed (audio seconds per wall second), page faults and kernel time.

    uv run python benchmarks/bench_runtime.py                 # 1x2, 2x1 threads; default/kept
    uv run python benchmarks/bench_runtime.py --audio-seconds 200
    python benchmarks/bench_runtime.py --device cuda          # 1 stream (a GPU runs one)

Settings run in turn, twice over (A B C D A B C D), and the two tries are averaged: on a
shared machine a single try can be off by 10 %.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench_codec import DEFAULT_MODEL_DIR, make_clips


def child(model_dir: Path, streams: int, keep: bool, audio_seconds: float, device: str) -> None:
    from tartok_tui.codec.allocator import keep_freed_memory

    if keep:
        assert keep_freed_memory()
    from tartok_tui.codec.tokenizer import BiCodecTokenizer

    tok = BiCodecTokenizer.load(model_dir, device=device, streams=streams)
    wavs = [tok.prepare(c) for c in make_clips(audio_seconds, 0)]
    tok.tokenize_many(wavs[:streams])  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    results = tok.tokenize_many(wavs)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert len(results) == len(wavs)
    audio = sum(len(w) for w in wavs) / tok.sample_rate
    print(
        json.dumps(
            {
                "speed": audio / wall,
                "faults": after.ru_minflt - before.ru_minflt,
                "sys_s": after.ru_stime - before.ru_stime,
                "threads": tok.threads_per_stream,
                "audio": audio,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--audio-seconds", type=float, default=100.0)
    parser.add_argument("--tries", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--child", nargs=2, metavar=("STREAMS", "KEEP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(
            args.model_dir,
            int(args.child[0]),
            args.child[1] == "1",
            args.audio_seconds,
            args.device,
        )
        return
    if not (args.model_dir / "wav2vec2-large-xlsr-53" / "pytorch_model.bin").is_file():
        raise SystemExit(f"no model at {args.model_dir}: run benchmarks/bench_codec.py once")

    # A GPU runs one stream whatever is asked: only the allocator setting varies there.
    streams = (1, 2) if args.device == "cpu" else (1,)
    settings = [(n, keep) for keep in (False, True) for n in streams]
    runs: dict[tuple[int, bool], list[dict]] = {s: [] for s in settings}
    for _ in range(args.tries):
        for streams, keep in settings:
            cmd = [
                sys.executable, __file__, "--model-dir", str(args.model_dir),
                "--audio-seconds", str(args.audio_seconds), "--device", args.device,
                "--child", str(streams), "1" if keep else "0",
            ]  # fmt: skip
            out = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                check=True,
            )
            runs[(streams, keep)].append(json.loads(out.stdout.strip().splitlines()[-1]))
    audio = runs[settings[0]][0]["audio"]
    print(f"{audio:.0f} s of audio on {args.device}, {args.tries} tries per setting (mean)\n")
    print(f"{'streams x threads':18s} {'freed memory':13s} {'x real time':>12s} "
          f"{'page faults':>12s} {'kernel s':>9s}")  # fmt: skip
    for (streams, keep), results in runs.items():
        n = len(results)
        print(
            f"{streams} x {results[0]['threads']:<14d} {'kept' if keep else 'default':13s} "
            f"{sum(r['speed'] for r in results) / n:12.2f} "
            f"{sum(r['faults'] for r in results) / n:12,.0f} "
            f"{sum(r['sys_s'] for r in results) / n:9.2f}"
        )


if __name__ == "__main__":
    main()

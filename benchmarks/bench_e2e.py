"""End-to-end throughput, side by side in one run, on generated Emilia-like tars.

  (a) the reference per-clip loop (what the old script did: decode + tokenize one
      clip at a time with the reference implementation),
  (b) our engine on audio already decoded in memory (the model-bound ceiling),
  (c) ``tartok-tui run --no-tui`` end to end (tar reading, MP3 decoding,
      resampling, batching, writing, pipes), start-up reported separately.

Full-size architecture with random weights (the real weights cannot be fetched
here; speed does not depend on the weight values). Needs the dev dependency
``spark-tts-lib`` for (a).

    uv run python benchmarks/bench_e2e.py --minutes 16
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

from tartok_tui.codec.allocator import keep_freed_memory
from tartok_tui.codec.random_model import write_random_model
from tartok_tui.codec.tokenizer import BiCodecTokenizer
from tartok_tui.shards.reader import Sample, iter_samples
from tartok_tui.testing_data import write_emilia_tar


def build_data(root: Path, minutes: float, seed: int) -> tuple[Path, list[Sample], float]:
    """Tars of 5-15 s MP3 clips at 24 kHz until ``minutes`` of audio."""
    input_dir = root / "input"
    input_dir.mkdir(parents=True, exist_ok=True)
    per_tar = 24
    total, t = 0.0, 0
    while total < minutes * 60:
        written = write_emilia_tar(
            input_dir / f"EN-B{t:06d}.tar", per_tar, seed=seed + t, min_s=5.0, max_s=15.0, batch=t
        )
        total += sum(s.duration for s in written)
        t += 1
    samples = [
        s
        for tar in sorted(input_dir.glob("*.tar"))
        for s in iter_samples(tar)
        if isinstance(s, Sample)
    ]
    return input_dir, samples, total


def bench_reference(model_dir: Path, samples: list[Sample]) -> float:
    import contextlib

    from spark_tts_lib.models.audio_tokenizer import BiCodecTokenizer as Reference

    with contextlib.redirect_stdout(io.StringIO()):  # it lists every decoder tensor it skips
        ref = Reference(str(model_dir), torch.device("cpu"))
    ref.tokenize(io.BytesIO(samples[0].audio))  # warm-up, not timed
    start = time.perf_counter()
    for s in samples:
        ref.tokenize(io.BytesIO(s.audio))
    return time.perf_counter() - start


def bench_engine(model_dir: Path, samples: list[Sample]) -> float:
    # As in a worker: freed memory kept (set after (a), which runs as the old script did).
    keep_freed_memory()
    tok = BiCodecTokenizer.load(model_dir)
    print(f"(b) engine: {tok.streams} stream(s) x {tok.threads_per_stream} thread(s)", flush=True)
    wavs = [tok.prepare(s.audio) for s in samples]
    tok.tokenize_many(wavs[:1])  # warm-up, not timed
    start = time.perf_counter()
    results = tok.tokenize_many(wavs)
    elapsed = time.perf_counter() - start
    bad = [r for r in results if isinstance(r, Exception)]
    if bad:
        raise SystemExit(f"engine failed on {len(bad)} clips: {bad[0]}")
    return elapsed


def bench_cli(
    model_dir: Path,
    input_dir: Path,
    output_dir: Path,
    num_proc: int,
    extra: list[str] | None = None,
) -> dict:
    """Run the CLI as a user would; sample the supervisor's own CPU and memory."""
    cmd = [
        sys.executable, "-m", "tartok_tui", "run", "--no-tui",
        "-i", str(input_dir), "-o", str(output_dir), "-m", str(model_dir),
        "--device", "cpu", "--num-proc", str(num_proc), "--progress-interval", "30",
        *(extra or []),
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sup = psutil.Process(proc.pid)
    peak_rss, cpu = 0, 0.0
    lines: list[str] = []
    first_load: list[float] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "model loaded" in line and not first_load:
                first_load.append(time.perf_counter() - start)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            peak_rss = max(peak_rss, sup.memory_info().rss)
            times = sup.cpu_times()
            cpu = times.user + times.system
        except psutil.NoSuchProcess:
            break
        time.sleep(0.5)
    wall = time.perf_counter() - start
    reader.join(timeout=5)
    if proc.returncode != 0:
        sys.stdout.write("".join(lines[-30:]))
        raise SystemExit(f"tartok-tui run exited {proc.returncode}")
    summary = json.loads((output_dir / "run-summary.json").read_text())
    return {
        "wall": wall,
        "startup": first_load[0] if first_load else float("nan"),
        "supervisor_cpu_s": cpu,
        "supervisor_peak_rss_mb": peak_rss / 2**20,
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=16.0, help="audio to generate (minutes)")
    parser.add_argument("--num-proc", type=int, default=1, help="workers for (c)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="tartok-bench-"))
    print(f"workdir {root}; torch threads {torch.get_num_threads()}; cores {os.cpu_count()}")
    model_dir = root / "model"
    if not (model_dir / "BiCodec" / "model.safetensors").exists():
        write_random_model(model_dir, "full", seed=args.seed)
    input_dir, samples, audio_s = build_data(root, args.minutes, args.seed)
    print(f"{len(samples)} clips, {audio_s / 60:.1f} min of audio (MP3, 24 kHz, 5-15 s)\n")

    rows: list[tuple[str, float]] = []
    if not args.skip_reference:
        t = bench_reference(model_dir, samples)
        rows.append(("(a) reference, one clip at a time", audio_s / t))
        print(
            f"(a) reference per-clip loop     {t:8.1f} s  {audio_s / t:6.2f}x real time", flush=True
        )
    t = bench_engine(model_dir, samples)
    rows.append(("(b) engine on decoded audio", audio_s / t))
    print(f"(b) engine, pre-decoded audio   {t:8.1f} s  {audio_s / t:6.2f}x real time", flush=True)
    out = root / "output"
    res = bench_cli(model_dir, input_dir, out, args.num_proc)
    steady = res["wall"] - res["startup"]
    print(
        f"(c) tartok-tui run --no-tui     {res['wall']:8.1f} s  {audio_s / res['wall']:6.2f}x real time "
        f"overall; start-up {res['startup']:.1f} s; {audio_s / steady:6.2f}x after start-up",
        flush=True,
    )
    print()
    b = audio_s / t
    c = audio_s / steady
    if rows and rows[0][0].startswith("(a)"):
        a = rows[0][1]
        print(f"(c) / (a) = {c / a:.2f}   (target >= 1.5)")
        print(f"(b) / (a) = {b / a:.2f}")
    print(f"(c) / (b) = {c / b:.1%}  (target >= 90 %)")
    print(
        f"supervisor: {res['supervisor_cpu_s']:.1f} CPU s over {res['wall']:.0f} s "
        f"({res['supervisor_cpu_s'] / res['wall']:.1%} of one core), peak RSS "
        f"{res['supervisor_peak_rss_mb']:.0f} MiB"
    )


if __name__ == "__main__":
    main()

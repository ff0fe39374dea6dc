"""End-to-end throughput, side by side in one run, on generated Emilia-like tars.

  (a) the reference per-clip loop (what the old script did: decode + tokenize one
      clip at a time with the reference implementation),
  (b) our engine on audio already decoded in memory (the model-bound ceiling),
  (c) ``tartok-tui run --no-tui`` end to end (tar reading, MP3 decoding,
      resampling, batching, writing, pipes), start-up reported separately;
  (d) with ``--s3``: the same run reading its tars from an S3 protocol server on
      127.0.0.1 (moto, in this process) instead of the local disk: what streaming
      from object storage costs. The output stays local, so only the input differs.

The three take turns tar by tar (one ``run`` per tar, its start-up excluded and
reported), so a shared machine's changing load falls on all of them alike. (a)
runs in this process as the old script ran; (b) in a process set up as a worker
is (freed memory kept).

Full-size architecture with random weights (the real weights cannot be fetched
here; speed does not depend on the weight values). Needs the dev dependency
``spark-tts-lib`` for (a).

    uv run python benchmarks/bench_e2e.py --minutes 16
    python benchmarks/bench_e2e.py --device cuda --skip-reference --minutes 60
    uv run python benchmarks/bench_e2e.py --s3 --skip-reference --minutes 4

moto's server is Python and shares the machine's cores with the run: on a small machine
(d) measures this setup's cost, an upper bound on what a real store's reads take here.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch
from loopback_s3 import start_loopback_s3

from tartok_tui.codec.allocator import keep_freed_memory
from tartok_tui.codec.random_model import write_random_model
from tartok_tui.codec.tokenizer import BiCodecTokenizer, Tokens
from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.shards.reader import Sample, iter_samples


def build_data(root: Path, minutes: float, seed: int) -> tuple[list[Path], float]:
    """Tars of 5-15 s MP3 clips at 24 kHz until ``minutes`` of audio; each in a folder of
    its own, so that (c) can run on one tar at a time."""
    per_tar = 24
    tars: list[Path] = []
    total, t = 0.0, 0
    while total < minutes * 60:
        folder = root / "input" / f"part{t}"
        folder.mkdir(parents=True, exist_ok=True)
        tar = folder / f"EN-B{t:06d}.tar"
        if not tar.exists():
            write_emilia_tar(tar, per_tar, seed=seed + t, min_s=5.0, max_s=15.0, batch=t)
        total += sum(
            s.meta["duration"] for s in iter_samples(tar) if isinstance(s, Sample) and s.meta
        )
        tars.append(tar)
        t += 1
    return tars, total


def samples_of(tar: Path) -> list[Sample]:
    return [s for s in iter_samples(tar) if isinstance(s, Sample)]


def reference_loop(model_dir: Path, device: str) -> Callable[[list[Sample]], float]:
    """(a): the reference tokenizer, one clip at a time from its bytes; returns seconds."""
    import contextlib

    from spark_tts_lib.models.audio_tokenizer import BiCodecTokenizer as Reference

    with contextlib.redirect_stdout(io.StringIO()):  # it lists every decoder tensor it skips
        ref = Reference(str(model_dir), torch.device(device))
    warmed = False

    def run(samples: list[Sample]) -> float:
        nonlocal warmed
        if not warmed:
            ref.tokenize(io.BytesIO(samples[0].audio))  # not timed
            warmed = True
        start = time.perf_counter()
        for s in samples:
            ref.tokenize(io.BytesIO(s.audio))
        return time.perf_counter() - start

    return run


def engine_server(model_dir: Path, device: str) -> None:
    """(b) in a process of its own, set up as a worker is (freed memory kept); for each tar
    path on stdin, decode its clips (not timed), tokenize them, print the seconds."""
    keep_freed_memory()
    tok = BiCodecTokenizer.load(model_dir, device=device)
    print(f"{tok.streams} {tok.threads_per_stream}", flush=True)
    warmed = False
    for line in sys.stdin:
        wavs = [tok.prepare(s.audio) for s in samples_of(Path(line.strip()))]
        if not warmed:
            tok.tokenize_many(wavs[: tok.streams])  # not timed
            warmed = True
        start = time.perf_counter()
        results = tok.tokenize_many(wavs)
        elapsed = time.perf_counter() - start
        bad = [r for r in results if not isinstance(r, Tokens)]
        print(f"error {bad[0]}" if bad else f"{elapsed}", flush=True)


def serve_s3(tars: list[Path]) -> tuple[object, list[str]]:
    """A moto S3 server on 127.0.0.1 holding ``tars`` (each under its part's prefix), with
    this process's environment (inherited by the runs) pointing at it; the server and the
    URL prefix of each tar's part."""
    server, _ = start_loopback_s3()
    from tartok_tui.storage import filesystem

    fs, _ = filesystem("s3://tartok-bench")
    fs.mkdir("tartok-bench")
    prefixes = []
    for tar in tars:
        fs.put_file(str(tar), f"tartok-bench/{tar.parent.name}/{tar.name}")
        prefixes.append(f"s3://tartok-bench/{tar.parent.name}")
    return server, prefixes


def bench_cli(
    model_dir: Path,
    input_dir: Path | str,
    output_dir: Path,
    num_proc: int,
    extra: list[str] | None = None,
    device: str = "cpu",
) -> dict:
    """Run the CLI as a user would, into an empty output dir (a finished tar would be
    skipped); sample the supervisor's own CPU and memory."""
    if output_dir.exists():
        shutil.rmtree(output_dir)
    cmd = [
        sys.executable, "-m", "tartok_tui", "run", "--no-tui",
        "-i", str(input_dir), "-o", str(output_dir), "-m", str(model_dir),
        "--device", device, "--num-proc", str(num_proc), "--progress-interval", "30",
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
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--s3", action="store_true", help="also (d): the same runs reading the tars from S3"
    )
    parser.add_argument("--engine-server", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine_server is not None:
        engine_server(args.engine_server, args.device)
        return

    root = args.workdir or Path(tempfile.mkdtemp(prefix="tartok-bench-"))
    print(f"workdir {root}; torch threads {torch.get_num_threads()}; cores {os.cpu_count()}")
    model_dir = root / "model"
    if not (model_dir / "BiCodec" / "model.safetensors").exists():
        write_random_model(model_dir, "full", seed=args.seed)
    tars, audio_s = build_data(root, args.minutes, args.seed)
    n_clips = sum(len(samples_of(t)) for t in tars)
    print(
        f"{n_clips} clips, {audio_s / 60:.1f} min of audio (MP3, 24 kHz, 5-15 s), {len(tars)} tars"
    )
    print("(a), (b) and (c) take turns tar by tar, so the machine's load falls on all alike.\n")

    reference = None if args.skip_reference else reference_loop(model_dir, args.device)
    server = subprocess.Popen(
        [sys.executable, __file__, "--engine-server", str(model_dir), "--device", args.device],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    streams, threads = server.stdout.readline().split()
    print(f"(b) engine: {streams} stream(s) x {threads} thread(s)", flush=True)

    s3_server, prefixes = serve_s3(tars) if args.s3 else (None, [])
    totals = {"a": 0.0, "b": 0.0, "c_wall": 0.0, "c_startup": 0.0, "c_tars": 0.0, "sup_cpu": 0.0}
    totals |= {"d_wall": 0.0, "d_startup": 0.0, "d_tars": 0.0}
    peak_rss = 0.0
    for i, tar in enumerate(tars):
        samples = samples_of(tar)
        tar_audio = sum(s.meta["duration"] for s in samples if s.meta)
        if reference is not None:
            totals["a"] += reference(samples)
        server.stdin.write(f"{tar}\n")
        server.stdin.flush()
        answer = server.stdout.readline().strip()
        if not answer or answer.startswith("error"):
            raise SystemExit(f"engine failed: {answer or 'no answer'}")
        totals["b"] += float(answer)
        res = bench_cli(
            model_dir, tar.parent, root / "output" / f"part{i}", args.num_proc, device=args.device
        )
        totals["c_wall"] += res["wall"]
        totals["c_startup"] += res["startup"]
        totals["c_tars"] += sum(t["wall_seconds"] for t in res["summary"]["tars"])
        totals["sup_cpu"] += res["supervisor_cpu_s"]
        peak_rss = max(peak_rss, res["supervisor_peak_rss_mb"])
        if prefixes:
            out = root / "output-s3" / f"part{i}"
            res = bench_cli(model_dir, prefixes[i], out, args.num_proc, device=args.device)
            totals["d_wall"] += res["wall"]
            totals["d_startup"] += res["startup"]
            totals["d_tars"] += sum(t["wall_seconds"] for t in res["summary"]["tars"])
            local = root / "output" / f"part{i}" / tar.with_suffix(".jsonl").name
            if (out / local.name).read_bytes() != local.read_bytes():
                raise SystemExit(f"{tar.name}: tokens read from S3 differ from the local run's")
        print(f"  tar {i + 1}/{len(tars)} ({tar_audio:.0f} s of audio) done", flush=True)
    server.stdin.close()
    server.wait()
    if s3_server is not None:
        s3_server.stop()  # type: ignore[attr-defined]

    print()
    b = audio_s / totals["b"]
    steady = totals["c_wall"] - totals["c_startup"]
    c = audio_s / steady
    if reference is not None:
        a = audio_s / totals["a"]
        print(f"(a) reference per-clip loop     {totals['a']:8.1f} s  {a:6.2f}x real time")
    print(f"(b) engine, pre-decoded audio   {totals['b']:8.1f} s  {b:6.2f}x real time")
    print(
        f"(c) tartok-tui run --no-tui     {steady:8.1f} s  {c:6.2f}x real time after start-up; "
        f"start-up {totals['c_startup'] / len(tars):.1f} s per run ({len(tars)} runs), "
        f"{audio_s / totals['c_wall']:.2f}x with it"
    )
    exit_s = steady - totals["c_tars"]
    print(
        f"    of which in the tars (lease to commit) {totals['c_tars']:.1f} s "
        f"({audio_s / totals['c_tars']:.2f}x), between tars and exiting {exit_s:.1f} s"
    )
    if prefixes:
        d_steady = totals["d_wall"] - totals["d_startup"]
        print(
            f"(d) run with tars from S3       {d_steady:8.1f} s  {audio_s / d_steady:6.2f}x "
            f"real time after start-up; in the tars {totals['d_tars']:.1f} s "
            f"({audio_s / totals['d_tars']:.2f}x)"
        )
        size_mb = sum(t.stat().st_size for t in tars) / 2**20
        print(
            f"    {size_mb:.1f} MiB of tars streamed; (d) / (c) in the tars = "
            f"{totals['c_tars'] / totals['d_tars']:.1%} of local-disk speed, "
            f"{(totals['d_tars'] - totals['c_tars']) / len(tars):+.2f} s per tar"
        )
    print()
    if reference is not None:
        print(f"(c) / (a) = {c / a:.2f}   (target >= 1.5)")
        print(f"(b) / (a) = {b / a:.2f}")
    print(f"(c) / (b) = {c / b:.1%}  (target >= 90 %)")
    print(
        f"supervisor: {totals['sup_cpu']:.1f} CPU s over {totals['c_wall']:.0f} s "
        f"({totals['sup_cpu'] / totals['c_wall']:.1%} of one core), peak RSS {peak_rss:.0f} MiB"
    )


if __name__ == "__main__":
    main()

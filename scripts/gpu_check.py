"""The one-command GPU check (run by scripts/gpu_check.sh): correctness and speed on one GPU.

Writes a full-size random-weight model and Emilia-like MP3 tars, then checks and measures:

    batch invariance   batched == one clip at a time on the device, fp32
    gpu vs cpu         fp32 tokens on the device against the CPU's
    bf16 vs fp32       semantic tokens equal, clips whose global tokens are all equal
    model speed        model-only x real time (pre-decoded clips), fp32 and bf16, several
                       batch sizes, with the peak device memory
    oom retry          a real out-of-memory under a capped memory fraction: the batch is
                       split, memory freed, every clip tokenized, the same tokens
    run                `tartok-tui run --no-tui` with 1 and 2 workers per GPU: every sample
                       once, no error record, x real time after start-up

Prints one table and writes it (text and JSON) to --out. `--quick` (with --device cpu) runs
every step on a tiny model and seconds of audio, to prove the script end to end without a GPU.
A step that fails is a FAIL row with its reason; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from tartok_tui.codec.cuda_driver import driver_version  # noqa: E402
from tartok_tui.codec.precision import tf32_enabled  # noqa: E402
from tartok_tui.codec.random_model import write_random_model  # noqa: E402
from tartok_tui.codec.tokenizer import BiCodecTokenizer, Tokens  # noqa: E402
from tartok_tui.demo.data import synth_speech, write_emilia_tar  # noqa: E402
from tartok_tui.shards.reader import Sample, iter_samples  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    preset: str
    check_clips: tuple[float, ...]
    """Seconds of each clip of the exactness checks."""
    tars: int
    clips_per_tar: int
    clip_seconds: tuple[float, float]
    batch_seconds: tuple[float, ...]
    run_batch_seconds: float


FULL = Sizes(
    "full",
    (
        *(0.5, 0.9, 1.3, 2.0, 2.7, 3.1, 4.4, 5.0, 5.9, 6.0, 6.1, 7.5),
        *(8.8, 9.9, 11.0, 12.5, 13.3, 14.9, 16.0, 17.7, 19.4, 21.0, 24.5, 29.9),
    ),
    tars=8,
    clips_per_tar=64,
    clip_seconds=(3.0, 12.0),
    batch_seconds=(60.0, 240.0, 960.0),
    run_batch_seconds=240.0,
)
QUICK = Sizes(
    "tiny",
    (0.5, 1.1, 2.3, 3.7),
    tars=2,
    clips_per_tar=5,
    clip_seconds=(1.0, 3.0),
    batch_seconds=(4.0, 16.0),
    run_batch_seconds=8.0,
)


class Report:
    """Rows of (check, result, detail), printed as they come and rewritten to `out`."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.rows: list[dict] = []
        out.mkdir(parents=True, exist_ok=True)

    def add(self, check: str, result: str, detail: str = "", **data) -> None:
        self.rows.append({"check": check, "result": result, "detail": detail, **data})
        print(f"  {check:34s} {result:>14s}  {detail}", flush=True)
        self.write()

    def table(self) -> str:
        lines = [f"{'check':34s} {'result':>14s}  detail", "-" * 100]
        lines += [f"{r['check']:34s} {r['result']:>14s}  {r['detail']}" for r in self.rows]
        return "\n".join(lines)

    def write(self) -> None:
        (self.out / "gpu_check.txt").write_text(self.table() + "\n")
        (self.out / "gpu_check.json").write_text(json.dumps(self.rows, indent=2) + "\n")


def step(report: Report, name: str, fn: Callable[[], None]) -> None:
    start = time.perf_counter()
    try:
        fn()
    except Exception as exc:
        traceback.print_exc()
        report.add(name, "FAIL", f"{type(exc).__name__}: {exc}"[:300])
    print(f"    ({name}: {time.perf_counter() - start:.1f} s)", flush=True)


# -- data ----------------------------------------------------------------------------------------


def _write_tar(args: tuple[Path, int, int, float, float]) -> float:
    path, n, seed, lo, hi = args
    written = write_emilia_tar(path, n, seed=seed, min_s=lo, max_s=hi, batch=seed)
    return sum(s.duration for s in written)


def write_tars(folder: Path, sizes: Sizes) -> float:
    """Emilia-like MP3 tars (24 kHz, one process per tar); returns their audio seconds."""
    jobs = [
        (folder / f"EN-B{t:06d}.tar", sizes.clips_per_tar, t, *sizes.clip_seconds)
        for t in range(sizes.tars)
    ]
    with ProcessPoolExecutor(min(len(jobs), os.cpu_count() or 1)) as pool:
        return sum(pool.map(_write_tar, jobs))


def decoded_clips(tok: BiCodecTokenizer, folder: Path) -> list:
    """Every clip of the tars, prepared as a worker prepares it (decode threads)."""
    audio = [
        s.audio
        for tar in sorted(folder.glob("*.tar"))
        for s in iter_samples(tar)
        if isinstance(s, Sample)
    ]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(tok.prepare, audio))


def check_clips(sizes: Sizes) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [synth_speech(rng, s, 16000).astype(np.float32) for s in sizes.check_clips]


def agreement(a: list, b: list) -> tuple[int, int, int]:
    """(semantic tokens equal, semantic tokens, clips with all global tokens equal)."""
    same = total = global_same = 0
    for x, y in zip(a, b, strict=True):
        assert isinstance(x, Tokens) and isinstance(y, Tokens), (x, y)
        assert len(x.semantic_tokens) == len(y.semantic_tokens)
        same += sum(p == q for p, q in zip(x.semantic_tokens, y.semantic_tokens, strict=True))
        total += len(x.semantic_tokens)
        global_same += x.global_tokens == y.global_tokens
    return same, total, global_same


def _agreement_row(report: Report, check: str, a: list, b: list) -> None:
    same, total, global_same = agreement(a, b)
    result = "equal" if same == total and global_same == len(a) else f"{same / total:.4%}"
    report.add(
        check,
        result,
        f"semantic {same}/{total}; global equal for {global_same}/{len(a)} clips",
        semantic_same=same,
        semantic_total=total,
        global_same=global_same,
        clips=len(a),
    )


# -- the checks ----------------------------------------------------------------------------------


def environment(report: Report, device: torch.device) -> None:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        detail = (
            f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs; "
            f"torch {torch.__version__} CUDA {torch.version.cuda}; driver {driver_version()}"
        )
    else:
        detail = f"cpu, {torch.get_num_threads()} threads; torch {torch.__version__}"
    report.add("device", str(device), detail)


def exactness(report: Report, model_dir: Path, device: torch.device, sizes: Sizes) -> list:
    tok = BiCodecTokenizer.load(model_dir, device=device, batch_seconds=240.0)
    if device.type == "cuda":
        report.add("tf32 off after load (fp32)", str(not tf32_enabled()), "matmul and cuDNN")
    clips = check_clips(sizes)
    single = [tok.tokenize([c])[0] for c in clips]
    order = list(np.random.default_rng(3).permutation(len(clips)))
    shuffled = tok.tokenize_many([clips[i] for i in order])
    batched = [None] * len(clips)
    for pos, i in enumerate(order):
        batched[i] = shuffled[pos]
    _agreement_row(report, f"batched == single ({device.type} fp32)", batched, single)
    return single


def cpu_agreement(report: Report, model_dir: Path, sizes: Sizes, device_tokens: list) -> None:
    cpu = BiCodecTokenizer.load(model_dir, device="cpu")
    try:
        tokens = cpu.tokenize_many(check_clips(sizes))
    finally:
        cpu.close()
    _agreement_row(report, "device vs cpu (fp32)", device_tokens, tokens)


def model_speed(report: Report, model_dir: Path, device: torch.device, sizes: Sizes, tars: Path):
    """x real time of the model alone at each batch size, fp32 then bf16; bf16 agreement."""
    results: dict[str, list] = {}
    for precision in ("fp32", "bf16"):
        tok = BiCodecTokenizer.load(model_dir, device=device, precision=precision)
        clips = decoded_clips(tok, tars)
        audio = sum(len(c) for c in clips) / tok.sample_rate
        tok.tokenize_many(clips[:8])  # warm-up: kernels, allocator
        for batch_seconds in sizes.batch_seconds:
            tok.batch_seconds = batch_seconds
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            out = tok.tokenize_many(clips)
            wall = time.perf_counter() - start
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0
            bad = sum(not isinstance(r, Tokens) for r in out)
            report.add(
                f"model {precision} batch {batch_seconds:g} s",
                f"{audio / wall:.0f}x",
                f"{audio:.0f} s of audio in {wall:.2f} s; peak {peak:.1f} GiB; {bad} errors",
                precision=precision,
                batch_seconds=batch_seconds,
                x_real_time=audio / wall,
                peak_gib=peak,
                errors=bad,
            )
            results[precision] = out  # the same tokens at every batch size
        tok.close()
        del tok
        if device.type == "cuda":
            torch.cuda.empty_cache()
    _agreement_row(report, "bf16 vs fp32 (all clips)", results["bf16"], results["fp32"])


def oom_child(model_dir: Path, budget_gib: float) -> None:
    """In a process of its own: cap the memory, force splits, print the outcome as JSON."""
    device = torch.device("cuda", 0)
    tok = BiCodecTokenizer.load(model_dir, device=device, batch_seconds=30.0)
    rng = np.random.default_rng(11)
    clips = [synth_speech(rng, s, 16000).astype(np.float32) for s in rng.uniform(5, 15, 96)]
    reference = tok.tokenize_many(clips)
    torch.cuda.synchronize()
    total = torch.cuda.get_device_properties(device).total_memory
    cap = (torch.cuda.memory_allocated(device) + budget_gib * 2**30) / total
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(cap, device)
    cleanups = 0
    real_cleanup = tok.cleanup

    def counting() -> None:
        nonlocal cleanups
        cleanups += 1
        real_cleanup()

    tok.cleanup = counting  # type: ignore[method-assign]
    tok.batch_seconds = 2000.0  # one batch of everything: far over the cap
    start = time.perf_counter()
    out = tok.tokenize_many(clips)
    print(
        json.dumps(
            {
                "cap_fraction": cap,
                "oom_retries": cleanups,
                "tokenized": sum(isinstance(r, Tokens) for r in out),
                "clips": len(clips),
                "same_tokens": out == reference,
                "seconds": time.perf_counter() - start,
            }
        )
    )


def oom_retry(report: Report, model_dir: Path, device: torch.device) -> None:
    if device.type != "cuda":
        report.add("oom retry (capped memory)", "n/a", "needs a GPU")
        return
    proc = subprocess.run(
        [sys.executable, __file__, "--oom-child", str(model_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    ok = r["tokenized"] == r["clips"] and r["same_tokens"] and r["oom_retries"] > 0
    report.add(
        "oom retry (capped memory)",
        "ok" if ok else "FAIL",
        f"cap {r['cap_fraction']:.3f} of memory: {r['oom_retries']} OOM splits, "
        f"{r['tokenized']}/{r['clips']} tokenized, same tokens: {r['same_tokens']}, "
        f"{r['seconds']:.1f} s",
        **r,
    )


def cli_runs(report: Report, model_dir: Path, device: torch.device, sizes: Sizes, tars: Path):
    expected = sum(
        1 for tar in tars.glob("*.tar") for s in iter_samples(tar) if isinstance(s, Sample)
    )
    for per_gpu in (1, 2):
        out = model_dir.parent / f"run-{sizes.preset}-{per_gpu}"
        shutil.rmtree(out, ignore_errors=True)  # a finished tar would be skipped
        placement = (
            ["--device", "auto", "--procs-per-gpu", str(per_gpu)]
            if device.type == "cuda"
            else ["--device", "cpu", "--num-proc", str(per_gpu)]
        )
        cmd = [
            sys.executable, "-m", "tartok_tui", "run", "--no-tui",
            "-i", str(tars), "-o", str(out), "-m", str(model_dir),
            "--batch-seconds", str(sizes.run_batch_seconds), *placement,
        ]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        loaded: float | None = None
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if loaded is None and "model loaded" in line:
                loaded = time.perf_counter() - start
        proc.wait(timeout=600)
        wall = time.perf_counter() - start
        label = f"run --no-tui, {per_gpu} per {'GPU' if device.type == 'cuda' else 'CPU'}"
        if proc.returncode != 0:
            report.add(label, "FAIL", f"exit {proc.returncode}: {''.join(lines[-5:])[-300:]}")
            continue
        summary = json.loads((out / "run-summary.json").read_text())
        steady = wall - (loaded or 0.0)
        ok = summary["samples"] == expected and summary["errors"] == 0
        report.add(
            label,
            f"{summary['audio_seconds'] / steady:.0f}x" if ok else "FAIL",
            f"{summary['samples']}/{expected} samples, {summary['errors']} errors; "
            f"{wall:.1f} s wall, first model loaded at {loaded or float('nan'):.1f} s; "
            f"{summary['audio_seconds'] / wall:.0f}x with start-up",
            wall=wall,
            startup=loaded,
            samples=summary["samples"],
            errors=summary["errors"],
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny model, seconds of audio")
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/tartok-gpu-check-out"))
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tartok-gpu-check"))
    parser.add_argument("--oom-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--oom-budget-gib", type=float, default=2.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.oom_child is not None:
        oom_child(args.oom_child, args.oom_budget_gib)
        return

    sizes = QUICK if args.quick else FULL
    device = torch.device(args.device)
    report = Report(args.out)
    started = time.perf_counter()
    print(f"gpu check: {device}, {sizes.preset} model, workdir {args.workdir}", flush=True)
    model_dir = args.workdir / f"model-{sizes.preset}"
    tars = args.workdir / f"tars-{sizes.preset}"
    step(report, "device", lambda: environment(report, device))

    def data() -> None:
        t0 = time.perf_counter()
        if not (model_dir / "wav2vec2-large-xlsr-53" / "pytorch_model.bin").is_file():
            write_random_model(model_dir, sizes.preset, seed=0)
        t1 = time.perf_counter()
        audio = write_tars(tars, sizes)
        report.add(
            "data written",
            f"{audio / 60:.1f} min",
            f"{sizes.preset} model in {t1 - t0:.0f} s; {sizes.tars} MP3 tars in "
            f"{time.perf_counter() - t1:.0f} s",
        )

    step(report, "data", data)
    single: list = []
    step(
        report,
        "batch invariance",
        lambda: single.extend(exactness(report, model_dir, device, sizes)),
    )
    if single:  # on the CPU (quick mode) this compares the CPU with itself
        step(report, "device vs cpu", lambda: cpu_agreement(report, model_dir, sizes, single))
    step(report, "model speed", lambda: model_speed(report, model_dir, device, sizes, tars))
    step(report, "oom retry", lambda: oom_retry(report, model_dir, device))
    step(report, "runs", lambda: cli_runs(report, model_dir, device, sizes, tars))
    report.add("total", f"{time.perf_counter() - started:.0f} s")
    print("\n" + report.table(), flush=True)


if __name__ == "__main__":
    main()

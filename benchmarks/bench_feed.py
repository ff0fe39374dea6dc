"""Can the host side feed a fast device? The real pipeline against a simulated accelerator.

Runs the worker's real lease pipeline end to end (``LeaseRunner``: its tar reader thread,
the decode pool, windows and length-sorted batches, one batch submitted ahead, the
``TarWriter`` with fsync and rename, messages encoded for the supervisor) on MP3 tars
written here, with the model replaced by a simulated device: one stream that takes
(audio seconds in the batch / S) of wall time per batch while holding no GIL (it sleeps),
S being the device's x real time, and returns tokens of the right shape.

First it measures the single-core decode capacity (the tokenizer's ``prepare``: MP3
decode + soxr VHQ + volume normalisation, one thread), then for S at several fractions of
(capacity x decode threads) it reports the achieved x real time, its share of S, how
much of the time the device sat idle, and the CPU cores the process used (CPU time /
wall: decoding, reading, batching and writing together). Goal: >= 90 % of S whenever S
is at most 60 % of (single-core capacity x decode cores).

``--decode sleep`` tells the pipeline's own limits from the machine's: each clip's decode
is replaced by a sleep at the measured single-core rate (no CPU, no GIL), so a miss there
is the pipeline's structure, not cores taken by other processes.

    uv run python benchmarks/bench_feed.py --minutes 60 --cores 2
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tartok_tui import messages as m
from tartok_tui.codec.random_model import write_random_model
from tartok_tui.codec.tokenizer import BiCodecTokenizer, Tokens, token_count
from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.output.paths import tar_output_paths
from tartok_tui.shards.reader import Sample, iter_samples
from tartok_tui.worker.channel import Channel, Control
from tartok_tui.worker.faults import Faults
from tartok_tui.worker.heartbeat import Heartbeat, ProgressCounter
from tartok_tui.worker.options import WorkerOptions
from tartok_tui.worker.pipeline import LeaseRunner

SAMPLE_RATE = 16000
GOAL_SHARE = 0.9
GOAL_LOAD = 0.6


class SleepDecode:
    """``prepare`` at a given x real time per thread without using a core: the clip is
    prepared once beforehand, then each call sleeps for its share of time."""

    def __init__(self, real: BiCodecTokenizer, tars: list[Path], capacity: float) -> None:
        self.capacity = capacity
        self.clips = {
            s.audio: real.prepare(s.audio)
            for tar in tars
            for s in iter_samples(tar)
            if isinstance(s, Sample) and s.audio
        }

    def prepare(self, data: bytes, max_seconds: float | None = None):
        clip = self.clips[data]
        time.sleep(len(clip) / SAMPLE_RATE / self.capacity)
        return clip


class SimulatedDevice:
    """The tokenizer as the pipeline uses it, on a device that runs S x real time.

    ``prepare`` is the real tokenizer's (the decode work is real); batches are planned by
    the real planner as for a GPU; ``submit`` packs the batch into one host buffer on the
    calling thread (as the tokenizer does before a copy to the device), then one stream
    thread sleeps for the batch's audio seconds / S and returns tokens.
    """

    def __init__(
        self, real: BiCodecTokenizer | SleepDecode, speed: float, batch_seconds: float
    ) -> None:
        self.real = real
        self.speed = speed
        self.device = torch.device("cuda")
        self.sample_rate = SAMPLE_RATE
        self.batch_seconds = batch_seconds
        self.streams = 1
        self.fault_hook = None
        self.progress_hook = None
        self.busy_s = 0.0
        self.batches = 0
        self._stream = ThreadPoolExecutor(1, thread_name_prefix="device")

    def prepare(self, data: bytes, max_seconds: float | None = None):
        return self.real.prepare(data, max_seconds=max_seconds)

    def plan_batches(self, lengths: list[int]) -> list[list[int]]:
        return BiCodecTokenizer.plan_batches(self, lengths)  # type: ignore[arg-type]

    def submit(self, clips: list) -> Future:
        lengths = [len(c) for c in clips]
        host = np.zeros((len(clips), max(lengths)), dtype=np.float32)
        for row, clip, n in zip(host, clips, lengths, strict=True):
            row[:n] = np.asarray(getattr(clip, "samples", clip), dtype=np.float32)
        return self._stream.submit(self._run, lengths)

    def _run(self, lengths: list[int]) -> list[Tokens]:
        started = time.perf_counter()
        time.sleep(sum(lengths) / SAMPLE_RATE / self.speed)
        self.busy_s += time.perf_counter() - started
        self.batches += 1
        out = []
        for n in lengths:
            semantic = (np.arange(token_count(n)) * 7 + n) % 8192
            out.append(Tokens((np.arange(32) * n % 4096).tolist(), semantic.tolist()))
        return out

    def cleanup(self) -> None:
        pass


def build_data(root: Path, minutes: float, per_tar_minutes: float) -> tuple[list[Path], float]:
    """MP3 tars of 3-15 s Emilia-like clips at 24 kHz, ~`per_tar_minutes` each."""
    tars: list[Path] = []
    total = 0.0
    while total < minutes * 60:
        tar = root / "input" / f"EN-B{len(tars):06d}.tar"
        if not tar.exists():
            n = int(per_tar_minutes * 60 / 9)
            write_emilia_tar(tar, n, seed=len(tars), min_s=3.0, max_s=15.0, batch=len(tars))
        total += sum(
            s.meta["duration"] for s in iter_samples(tar) if isinstance(s, Sample) and s.meta
        )
        tars.append(tar)
    return tars, total


def decode_capacity(real: BiCodecTokenizer, tar: Path) -> float:
    """x real time of `prepare` on one thread, by that thread's CPU time."""
    clips = [s.audio for s in iter_samples(tar) if isinstance(s, Sample) and s.audio]
    real.prepare(clips[0])
    audio = 0.0
    started = time.thread_time()
    for data in clips:
        audio += len(real.prepare(data)) / SAMPLE_RATE
    return audio / (time.thread_time() - started)


@dataclass
class FeedResult:
    speed: float
    achieved: float
    idle_share: float
    cores: float
    batches: int


def run_feed(
    real: BiCodecTokenizer | SleepDecode,
    tars: list[Path],
    audio_s: float,
    speed: float,
    opts: WorkerOptions,
) -> FeedResult:
    """All tars through one LeaseRunner (a worker's leases one after another)."""
    device = SimulatedDevice(real, speed, opts.batch_seconds)
    shutil.rmtree(opts.output_dir, ignore_errors=True)
    fd = os.open(os.devnull, os.O_WRONLY)
    channel = Channel(fd)
    counter = ProgressCounter()
    heartbeat = Heartbeat(channel, counter).start()
    runner = LeaseRunner(device, opts, Control(), channel, Faults(), counter)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    for i, tar in enumerate(tars):
        runner.run(m.Lease(i + 1, str(tar)))
        if not tar_output_paths(opts.output_dir, opts.input_dir, tar).is_done():
            # A figure for a pipeline that failed its tars would mean nothing.
            raise SystemExit(f"{tar.name} was not committed (see the log above): no figures")
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    heartbeat.stop()
    runner.pool.shutdown()
    os.close(fd)
    cpu_s = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    return FeedResult(
        speed=speed,
        achieved=audio_s / wall,
        idle_share=1.0 - device.busy_s / wall,
        cores=cpu_s / wall,
        batches=device.batches,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="audio per run (minutes)")
    parser.add_argument("--tar-minutes", type=float, default=10.0, help="audio per tar")
    parser.add_argument(
        "--cores", type=int, default=os.cpu_count() or 1, help="cores given to the worker"
    )
    parser.add_argument(
        "--loads",
        default="0.3,0.45,0.6,0.8,1.0,1.3",
        help="S as fractions of (single-core decode capacity x decode threads)",
    )
    parser.add_argument("--batch-seconds", type=float, default=240.0)
    parser.add_argument(
        "--decode",
        choices=("real", "sleep"),
        default="real",
        help="real decoding, or a sleep at the measured rate (the pipeline's own limits)",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="tartok-feed-"))
    model_dir = root / "model"
    if not (model_dir / "BiCodec" / "model.safetensors").exists():
        write_random_model(model_dir, "tiny", seed=0)
    real = BiCodecTokenizer.load(model_dir, streams=1)
    tars, audio_s = build_data(root, args.minutes, args.tar_minutes)
    # A GPU worker given `cores` cores: its decode threads as the worker chooses them.
    opts = WorkerOptions(
        slot=0,
        device="cuda:0",
        model_dir=model_dir,
        threads=args.cores,
        output_dir=root / "output",
        input_dir=root / "input",
        batch_seconds=args.batch_seconds,
    )
    decoders = opts.resolved_decode_workers
    capacity = decode_capacity(real, tars[0])
    print(
        f"workdir {root}; {len(tars)} MP3 tars, {audio_s / 60:.1f} min of audio; "
        f"{os.cpu_count()} cores here, {args.cores} given, {decoders} decode threads; "
        f"batches of {args.batch_seconds:g} s; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"single-core decode capacity (prepare: MP3 + soxr VHQ + normalisation): {capacity:,.0f}x"
    )
    source: BiCodecTokenizer | SleepDecode = real
    if args.decode == "sleep":
        print("decode replaced by a sleep at that rate per thread (no CPU, no GIL)")
        source = SleepDecode(real, tars, capacity)
    limit = capacity * decoders
    print(f"goal: >= {GOAL_SHARE:.0%} of S for S <= {GOAL_LOAD:.0%} x {limit:,.0f}x\n")
    print(f"{'load':>5} {'S (x rt)':>9} {'achieved':>9} {'of S':>6} {'idle':>6} {'cores':>6} "
          f"{'batches':>8}  goal")  # fmt: skip
    for load in (float(x) for x in args.loads.split(",")):
        r = run_feed(source, tars, audio_s, load * limit, opts)
        share = r.achieved / r.speed
        goal = "" if load > GOAL_LOAD else ("met" if share >= GOAL_SHARE else "MISSED")
        print(
            f"{load:5.2f} {r.speed:9,.0f} {r.achieved:9,.0f} {share:6.1%} {r.idle_share:6.1%} "
            f"{r.cores:6.2f} {r.batches:8d}  {goal}",
            flush=True,
        )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

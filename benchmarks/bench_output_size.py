"""The two output formats side by side: bytes on disk, write and read time, writer memory.

Writes the same records as JSONL and as Parquet through ``TarWriter`` (no model: the
size of a tokens file depends on its tokens and metadata only). Clip durations follow
Emilia (3-30 s, mean ~10 s); the tokens are uniform random over the codebooks (32
global tokens in [0, 4096), 50 semantic tokens a second in [0, 8192)): random tokens
are the worst case for Parquet's compression, so real tokens can only come out smaller
there, while JSONL's size barely changes (it depends on the digits of the numbers).

    uv run python benchmarks/bench_output_size.py --tars 3 --samples-per-tar 2000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tartok_tui.output import parquet as parquet_module
from tartok_tui.output.writer import TarWriter, make_record

SEMANTIC_PER_S = 50
HOURS_FOR_SCALE = 100_000


def emilia_like(rng: np.random.Generator, tar: int, n: int) -> list[tuple[float, dict, np.ndarray]]:
    """(duration, metadata, semantic tokens) of n clips."""
    words = ["the", "voice", "model", "river", "light", "window", "morning", "quiet", "story"]
    clips = []
    for i in range(n):
        duration = float(np.clip(rng.gamma(4.0, 2.5), 3.0, 30.0))
        samples = int(duration * 16000)
        n_semantic = (samples - 400) // 320 + 1
        text = " ".join(rng.choice(words, max(1, int(duration * 2.5))))
        key = f"EN_B{tar:05d}_S{i // 50:05d}_W{i:06d}"
        meta = {
            "id": key,
            "wav": f"EN_B{tar:05d}/{key}.mp3",
            "text": text,
            "duration": round(duration, 3),
            "speaker": f"EN_B{tar:05d}_S{i // 50:05d}",
            "language": "en",
            "dnsmos": round(float(rng.uniform(2.8, 3.6)), 4),
        }
        clips.append((duration, meta, rng.integers(0, 8192, n_semantic)))
    return clips


def write_tar(root: Path, tar: int, clips, output_format: str) -> tuple[Path, float]:
    inp = root / "in"
    inp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(10_000 + tar)
    started = time.perf_counter()
    with TarWriter(
        root / output_format, inp, inp / f"EN-B{tar:06d}.tar", output_format=output_format
    ) as writer:
        for i, (_, meta, semantic) in enumerate(clips):
            glob = rng.integers(0, 4096, 32)
            writer.add(i, make_record(meta["id"], meta, glob, semantic))
        writer.commit()
    path = writer.paths.tokens
    return path, time.perf_counter() - started


def read_back(path: Path) -> tuple[int, float]:
    started = time.perf_counter()
    if path.suffix == ".parquet":
        rows = pq.read_table(path).num_rows
    else:
        with open(path, "rb") as f:
            rows = sum(1 for line in f if json.loads(line))
    return rows, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tars", type=int, default=3)
    parser.add_argument("--samples-per-tar", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="tartok-bench-size-"))
    rng = np.random.default_rng(args.seed)
    hours = tokens = 0.0
    totals = {f: {"bytes": 0, "write_s": 0.0, "read_s": 0.0} for f in ("jsonl", "parquet")}
    arrow_peak = held_peak = 0
    for tar in range(args.tars):
        clips = emilia_like(rng, tar, args.samples_per_tar)
        hours += sum(c[0] for c in clips) / 3600
        tokens += sum(32 + len(c[2]) for c in clips)
        held_peak = max(held_peak, 2 * int(sum(32 + len(c[2]) for c in clips)))
        for output_format in totals:
            pool = pa.default_memory_pool()
            before = pool.max_memory()
            path, write_s = write_tar(root, tar, clips, output_format)
            if output_format == "parquet":
                arrow_peak = max(arrow_peak, pool.max_memory() - before)
            rows, read_s = read_back(path)
            assert rows == len(clips), (path, rows)
            totals[output_format]["bytes"] += path.stat().st_size
            totals[output_format]["write_s"] += write_s
            totals[output_format]["read_s"] += read_s

    print(
        f"{args.tars} tars x {args.samples_per_tar} clips: {hours:.2f} h of audio, "
        f"{tokens / 1e6:.2f} M tokens (random, uniform over the codebooks)"
    )
    print(
        f"{'format':8} {'MB':>9} {'bytes/token':>12} {'GB per 100k h':>14} {'write s':>8} {'read s':>7}"
    )
    for output_format, t in totals.items():
        per_token = t["bytes"] / tokens
        scaled = t["bytes"] / hours * HOURS_FOR_SCALE / 1e9
        print(
            f"{output_format:8} {t['bytes'] / 1e6:9.1f} {per_token:12.2f} {scaled:14.1f} "
            f"{t['write_s']:8.2f} {t['read_s']:7.2f}"
        )
    ratio = totals["jsonl"]["bytes"] / totals["parquet"]["bytes"]
    print(f"JSONL / Parquet size: {ratio:.2f}x")
    print(
        f"Parquet writer, largest tar: {held_peak / 1e6:.1f} MB of tokens held as uint16 "
        f"until commit; Arrow memory during commit: {arrow_peak / 1e6:.1f} MB "
        f"(row groups of {parquet_module.ROW_GROUP_ROWS} rows)"
    )


if __name__ == "__main__":
    main()

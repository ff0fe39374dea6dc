"""Export speed: each format from each output format, on this machine.

Writes Emilia-like outputs (``bench_output_size``'s clips: 3-30 s, random tokens, the same
metadata) as JSONL and as Parquet, then exports each with every format, in-process
(``export.run.run_export``, what the command runs), taking turns so that a slow moment of
the machine does not land on one format only. Reports the output read in GB per minute
(the tokens files' bytes over the export's wall time) and samples per second.

    uv run python benchmarks/bench_export.py --tars 4 --samples-per-tar 2000 --rounds 2
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_output_size import emilia_like, write_tar

from tartok_tui.export import FORMAT_NAMES
from tartok_tui.export.run import run_export


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tars", type=int, default=4)
    parser.add_argument("--samples-per-tar", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="tartok-bench-export-"))
    rng = np.random.default_rng(args.seed)
    sizes = {"jsonl": 0, "parquet": 0}
    hours = 0.0
    for tar in range(args.tars):
        clips = emilia_like(rng, tar, args.samples_per_tar)
        hours += sum(c[0] for c in clips) / 3600
        for source in sizes:
            path, _ = write_tar(root, tar, clips, source)
            sizes[source] += path.stat().st_size
    samples = args.tars * args.samples_per_tar
    print(
        f"{args.tars} tars x {args.samples_per_tar} clips ({hours:.2f} h of audio): "
        f"JSONL {sizes['jsonl'] / 1e6:.1f} MB, Parquet {sizes['parquet'] / 1e6:.1f} MB"
    )
    seconds = {(s, f): 0.0 for s in sizes for f in FORMAT_NAMES}
    for _ in range(args.rounds):
        for source, fmt in seconds:
            dest = root / f"export-{source}-{fmt}"
            shutil.rmtree(dest, ignore_errors=True)
            started = time.perf_counter()
            result = run_export(root / source, dest, fmt)
            seconds[source, fmt] += time.perf_counter() - started
            assert result.ok and result.samples + result.skipped_samples == samples, result
    print(f"{'from':8} {'to':10} {'s':>7} {'GB/min read':>12} {'samples/s':>10}")
    for (source, fmt), total in seconds.items():
        each = total / args.rounds
        rate = sizes[source] / 1e9 / (each / 60)
        print(f"{source:8} {fmt:10} {each:7.2f} {rate:12.3f} {samples / each:10,.0f}")


if __name__ == "__main__":
    main()

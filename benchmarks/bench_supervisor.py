"""What the supervisor itself costs with many workers.

Runs ``tartok-tui run --no-tui`` with 16 real worker processes (tiny
random-weight model, one torch thread each, so the workers finish batches and
report progress as often as they ever will) and samples the supervisor
process's own CPU time and memory, children excluded.

    uv run python benchmarks/bench_supervisor.py --workers 16
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench_e2e import bench_cli

from tartok_tui.codec.random_model import write_random_model
from tartok_tui.demo.data import write_emilia_tar


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--tars", type=int, default=48)
    parser.add_argument("--samples-per-tar", type=int, default=40)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="tartok-bench-sup-"))
    model_dir = write_random_model(root / "model", "tiny")
    input_dir = root / "input"
    input_dir.mkdir(parents=True, exist_ok=True)
    audio_s = 0.0
    for t in range(args.tars):
        written = write_emilia_tar(
            input_dir / f"EN-B{t:06d}.tar", args.samples_per_tar, seed=t, min_s=1.0, max_s=4.0,
            audio_format="wav", batch=t,
        )  # fmt: skip
        audio_s += sum(s.duration for s in written)
    samples = args.tars * args.samples_per_tar
    res = bench_cli(
        model_dir, input_dir, root / "output", args.workers, ["--threads-per-worker", "1"]
    )
    summary = res["summary"]
    print(
        f"{args.workers} workers, {args.tars} tars, {samples} samples, {audio_s / 60:.1f} min audio"
    )
    print(f"wall {res['wall']:.1f} s (start-up {res['startup']:.1f} s)")
    print(
        f"supervisor CPU {res['supervisor_cpu_s']:.2f} s = "
        f"{res['supervisor_cpu_s'] / res['wall']:.1%} of one core over the run, "
        f"{1000 * res['supervisor_cpu_s'] / samples:.2f} ms per sample; "
        f"peak RSS {res['supervisor_peak_rss_mb']:.0f} MiB"
    )
    print(f"summary exit reason: {summary.get('exit_reason')}")


if __name__ == "__main__":
    main()

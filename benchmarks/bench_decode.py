"""Decode speed (x real time) of BiCodec's decoder, ours and the reference's, on this machine.

Writes a random-weight model dir with the full-size architecture (``write_random_model``
"full": speed does not depend on weight values), draws random tokens for clips of 5-15 s,
and decodes them three ways, taking turns clip by clip:

- ours, one clip at a time (what ``tartok-tui decode`` does on the CPU);
- ours, the clips in padded batches of ``--batch`` (what it does on a GPU);
- the reference ``BiCodec.detokenize`` (spark-tts-lib), one clip at a time.

It also reports how far ours is from the reference, sample by sample (max |difference|).

    uv run python benchmarks/bench_decode.py --audio-seconds 60 --batch 4
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tartok_tui.codec.decoder import load_decoder
from tartok_tui.codec.model_dir import BICODEC_DIR
from tartok_tui.codec.random_model import write_random_model


def clips(seconds: float, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(global (1, 32), semantic (1, T)) of clips 5-15 s long, about ``seconds`` in all."""
    rng = np.random.default_rng(seed)
    out, total = [], 0.0
    while total < seconds:
        frames = int(rng.uniform(5, 15) * 50)
        out.append(
            (
                torch.from_numpy(rng.integers(0, 4096, (1, 32))),
                torch.from_numpy(rng.integers(0, 8192, (1, frames))),
            )
        )
        total += frames / 50
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--audio-seconds", type=float, default=60.0)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--preset", choices=("full", "tiny"), default="full")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args()

    root = (args.workdir or Path(tempfile.mkdtemp(prefix="tartok-bench-decode-"))) / args.preset
    if not (root / BICODEC_DIR / "model.safetensors").exists():
        started = time.perf_counter()
        write_random_model(root, args.preset)
        print(f"wrote a random {args.preset} model in {time.perf_counter() - started:.0f} s")
    ours = load_decoder(root)
    reference = None
    if not args.no_reference:
        from spark_tts_lib.models.bicodec import BiCodec

        with contextlib.redirect_stdout(io.StringIO()):  # it lists the ECAPA head it lacks
            reference = BiCodec.load_from_checkpoint(root / BICODEC_DIR)
    work = clips(args.audio_seconds, seed=0)
    audio = sum(s.shape[1] for _, s in work) * 320 / 16000
    print(f"{len(work)} clips, {audio:.1f} s of audio, {torch.get_num_threads()} torch threads")
    times = {"ours, one clip at a time": 0.0, f"ours, batches of {args.batch}": 0.0}
    if reference is not None:
        times["reference, one clip at a time"] = 0.0
    worst = 0.0
    with torch.inference_mode():
        ours(*work[0])  # first-call set-up, not timed
        for start in range(0, len(work), args.batch):
            group = work[start : start + args.batch]
            for g, s in group:
                t = time.perf_counter()
                mine = ours(g, s)[0].numpy()
                times["ours, one clip at a time"] += time.perf_counter() - t
                if reference is not None:
                    t = time.perf_counter()
                    theirs = reference.detokenize(s, g.unsqueeze(1)).reshape(-1).numpy()
                    times["reference, one clip at a time"] += time.perf_counter() - t
                    worst = max(worst, float(np.abs(mine - theirs).max()))
            frames = [s.shape[1] for _, s in group]
            semantic = torch.zeros(len(group), max(frames), dtype=torch.long)
            for row, (_, s) in zip(semantic, group, strict=True):
                row[: s.shape[1]] = s[0]
            t = time.perf_counter()
            ours(torch.cat([g for g, _ in group]), semantic, torch.tensor(frames))
            times[f"ours, batches of {args.batch}"] += time.perf_counter() - t
    print(f"{'':32} {'s':>8} {'x real time':>12}")
    for name, seconds in times.items():
        print(f"{name:32} {seconds:8.2f} {audio / seconds:12.2f}")
    if reference is not None:
        print(f"largest |ours - reference| over every sample: {worst:.2e}")


if __name__ == "__main__":
    main()

"""The input side: preparing a clip (decode, resample, volume normalisation) and reading tars
(streamed, indexed, from local disk or a local S3 server).

    uv run python benchmarks/bench_input.py              # audio stages, local tars
    uv run python benchmarks/bench_input.py --s3         # and the same tars from moto on 127.0.0.1

Audio: a 10 s speech-like clip per format, each stage timed alone, best of --repeats, in a
process that keeps freed memory (as workers do). Tars: --samples samples of ~100 KB of
incompressible audio; every reading mode runs in turn, --repeats times, best kept. The
official volume normalisation (a full sort) is timed beside ours.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from loopback_s3 import start_loopback_s3


def best_ms(fn: Callable[[], object], repeats: int, inner: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner * 1000)
    return min(times)


def audio_stages(repeats: int) -> dict:
    import soxr

    from tartok_tui.audio import _decode, _normalize_by_sorting, normalize_volume, prepare_audio
    from tartok_tui.demo.data import _encode, synth_speech

    clip = synth_speech(np.random.default_rng(0), 10.0, 24000)
    results = {}
    for fmt in ("mp3", "flac", "ogg", "m4a"):
        data = _encode(clip, 24000, fmt)
        audio, sr = _decode(data, 60.0)
        resampled = soxr.resample(audio, sr, 16000, quality="VHQ")
        results[fmt] = {
            "decode_ms": best_ms(lambda d=data: _decode(d, 60.0), repeats),
            "resample_ms": best_ms(
                lambda a=audio, s=sr: soxr.resample(a, s, 16000, "VHQ"), repeats
            ),
            "normalize_ms": best_ms(lambda r=resampled: normalize_volume(r), repeats),
            "official_normalize_ms": best_ms(
                lambda r=resampled: _normalize_by_sorting(r, 0.2), repeats
            ),
            "prepare_ms": best_ms(lambda d=data: prepare_audio(d, max_seconds=60.0), repeats),
        }
    return results


def write_tar(path: Path, samples: int, layout: str) -> int:
    rng = random.Random(0)
    audio = [rng.randbytes(rng.randint(60_000, 140_000)) for _ in range(samples)]
    members = [(f"k{i:06d}.json", b'{"text": "x"}') for i in range(samples)]
    wavs = [(f"k{i:06d}.mp3", a) for i, a in enumerate(audio)]
    if layout == "grouped":
        order = [m for pair in zip(members, wavs, strict=True) for m in pair]
    else:
        order = members + wavs
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in order:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.stat().st_size


def read_all(location: str, indexed: bool, access) -> int:
    from tartok_tui.shards.reader import Sample, iter_samples

    n = 0
    for item in iter_samples(location, ("mp3",), indexed=indexed, access=access):
        assert isinstance(item, Sample) and item.problem is None, item
        n += 1
    return n


def tar_reading(samples: int, repeats: int, s3: bool) -> dict:
    from tartok_tui.shards.reader import count_samples
    from tartok_tui.storage import Access

    tmp = Path(tempfile.mkdtemp(prefix="bench-input-"))
    sizes = {
        layout: write_tar(tmp / f"{layout}.tar", samples, layout)
        for layout in ("grouped", "ungrouped")
    }
    places = {"local": (str(tmp / "grouped.tar"), str(tmp / "ungrouped.tar"), None)}
    server = None
    if s3:
        server, endpoint = start_loopback_s3()
        access = Access(options={"endpoint_url": endpoint})
        from tartok_tui.storage import filesystem

        fs, _ = filesystem("s3://bench", access.options)
        fs.mkdir("bench")
        for layout in sizes:
            fs.put_file(str(tmp / f"{layout}.tar"), f"bench/{layout}.tar")
        places["s3"] = ("s3://bench/grouped.tar", "s3://bench/ungrouped.tar", access)
    cases = []
    for place, (grouped, ungrouped, access) in places.items():
        cases += [
            (
                f"{place} streamed",
                lambda g=grouped, a=access: read_all(g, False, a),
                sizes["grouped"],
            ),
            (
                f"{place} indexed",
                lambda u=ungrouped, a=access: read_all(u, True, a),
                sizes["ungrouped"],
            ),
            (
                f"{place} count",
                lambda g=grouped, a=access: count_samples(g, access=a),
                sizes["grouped"],
            ),
        ]
    timings: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(repeats):
        for name, run, _ in cases:
            start = time.perf_counter()
            assert run() == samples
            timings[name].append(time.perf_counter() - start)
    if server is not None:
        server.stop()
    return {
        name: {
            "best_s": round(min(timings[name]), 3),
            "median_s": round(statistics.median(timings[name]), 3),
            "MB_per_s": round(size / min(timings[name]) / 1e6, 1),
        }
        for name, _, size in cases
    } | {"tar_MB": round(sizes["grouped"] / 1e6, 1), "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument(
        "--s3", action="store_true", help="also read the tars from moto on 127.0.0.1"
    )
    args = parser.parse_args()
    from tartok_tui.codec.allocator import keep_freed_memory

    keep_freed_memory()
    print(json.dumps({"audio_10s_clip": audio_stages(args.repeats)}, indent=1))
    print(json.dumps({"tar_reading": tar_reading(args.samples, args.repeats, args.s3)}, indent=1))


if __name__ == "__main__":
    main()

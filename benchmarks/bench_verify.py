"""``verify`` and ``status`` on an Emilia-shaped output, locally and from a local S3 server.

No model: the input tars hold Emilia-like keys and JSON with tiny fake audio, and each
tar's output (tokens with Emilia-like lengths, one error record, the commit record) is
written through ``TarWriter`` as a worker commits it, so the files are the real format.
Timed, in this process: ``status`` (one listing), ``status --counts`` (commit records read),
``verify`` (outputs and one input listing) and ``verify --deep`` (every input's headers).

With ``--s3`` the same output and inputs are uploaded to moto on 127.0.0.1, which counts
what it serves, so the input bytes each command read are measured. moto copies a whole
object to answer each ranged request, so ``--deep`` over S3 is measured on a few separate
Emilia-shaped tars with audio members of Emilia's size (``--deep-tars``, ``--deep-keys``),
against the streamed header scan that ``verify`` did before (whole tars read through).
The last table scales the measured figures to Emilia (``--emilia-tars`` x ``--emilia-keys``).

    uv run python benchmarks/bench_verify.py --s3
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loopback_s3 import start_loopback_s3

from tartok_tui.output.scan import scan_output
from tartok_tui.output.tarmeta import input_identity
from tartok_tui.output.verify import verify
from tartok_tui.output.writer import TarWriter, make_record
from tartok_tui.shards.reader import scan_tar
from tartok_tui.storage import Access, filesystem

FINGERPRINT = "b" * 32
BUCKET = "bench-verify"
WORDS = ["the", "voice", "model", "river", "light", "window", "morning", "quiet", "story"]


def emilia_sample(rng: random.Random, tar: int, i: int) -> tuple[str, dict[str, Any], float]:
    key = f"EN_B{tar:05d}_S{i // 50:05d}_W{i:06d}"
    duration = min(30.0, max(3.0, rng.gammavariate(4.0, 2.5)))
    meta = {
        "id": key,
        "wav": f"EN_B{tar:05d}/EN_B{tar:05d}_S{i // 50:05d}/mp3/{key}.mp3",
        "text": " ".join(rng.choices(WORDS, k=max(1, int(duration * 2.5)))),
        "duration": round(duration, 3),
        "speaker": f"EN_B{tar:05d}_S{i // 50:05d}",
        "language": "en",
        "dnsmos": round(rng.uniform(2.8, 3.6), 4),
    }
    return key, meta, duration


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
    tf.addfile(info, io.BytesIO(data))


def write_tar(inp: Path, tar: int, keys: int, audio: Callable[[], bytes], rng: random.Random):
    """An Emilia-shaped input tar (``<key>.json`` then ``<key>.mp3``); its samples."""
    path = inp / f"EN-B{tar:06d}.tar"
    samples = [emilia_sample(rng, tar, i) for i in range(keys)]
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for key, meta, _ in samples:
            add(tf, f"{key}.json", json.dumps(meta).encode())
            add(tf, f"{key}.mp3", audio())
    return path, samples


def write_output(inp: Path, out: Path, path: Path, samples, fmt: str, rng: random.Random) -> None:
    """What a worker commits for the tar: every sample a record but the last (an error
    record), the commit record with the keys and the input's identity."""
    with TarWriter(out, inp, path, output_format=fmt, fingerprint=FINGERPRINT) as writer:
        for i, (key, meta, duration) in enumerate(samples[:-1]):
            semantic = [rng.randrange(8192) for _ in range(int(duration * 50))]
            writer.add(
                i, make_record(key, meta, [rng.randrange(4096) for _ in range(32)], semantic)
            )
        writer.add_error(len(samples) - 1, samples[-1][0], "decode", "benchmark: no audio")
        writer.commit(input_keys=[s[0] for s in samples], input_identity=input_identity(path))


def build(root: Path, tars: int, keys: int, fmt: str, audio: Callable[[], bytes], seed: int):
    inp, out = root / "in", root / "out"
    inp.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for tar in range(tars):
        path, samples = write_tar(inp, tar, keys, audio, rng)
        write_output(inp, out, path, samples, fmt, rng)
    return inp, out


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


COMMANDS = ("status", "status --counts", "verify", "verify --deep")


def run_command(name: str, inp: Any, out: Any, access: Access | None, jobs: int) -> float:
    """Seconds ``name`` took; its result checked (every tar done, recorded, verified)."""
    started = time.perf_counter()
    if name.startswith("status"):
        status = scan_output(out, access, counts=name.endswith("counts"), jobs=jobs)
        seconds = time.perf_counter() - started
        assert status.records == status.tars_done > 0 and not status.unreadable
        return seconds
    deep = name.endswith("deep")
    report = verify(inp, out, access=access, deep=deep, jobs=jobs)
    seconds = time.perf_counter() - started
    assert report.ok and report.scanned == (len(report.tars) if deep else 0), report.to_dict()
    return seconds


def upload(local: Path, prefix: str) -> str:
    fs, _ = filesystem(f"s3://{BUCKET}")
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    fs.put(str(local) + "/", f"{BUCKET}/{prefix}/", recursive=True)
    return f"s3://{BUCKET}/{prefix}"


def on_s3(inp: Path, out: Path, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The commands (but --deep, see deep_on_s3) over S3: time, requests, input bytes."""
    server, _ = start_loopback_s3()
    try:
        url_in, url_out = upload(inp, "in"), upload(out, "out")
        access = Access(parallel_reads=args.jobs)
        measured: dict[str, Any] = {}
        for name in COMMANDS[:-1]:
            server.traffic.clear()
            seconds = run_command(name, url_in, url_out, access, args.jobs)
            requests, _ = server.traffic.under(f"/{BUCKET}")
            input_requests, input_bytes = server.traffic.under(f"/{BUCKET}/in/")
            _, output_bytes = server.traffic.under(f"/{BUCKET}/out/")
            measured[name] = {
                "seconds": seconds,
                "requests": requests,
                "input_requests": input_requests,
                "input_bytes": input_bytes,
                "output_bytes": output_bytes,
            }
        measured["deep"] = deep_on_s3(server, root, args, access)
        return measured
    finally:
        server.stop()


def deep_on_s3(server: Any, root: Path, args: argparse.Namespace, access: Access) -> dict[str, Any]:
    """verify --deep against the streamed header scan, on tars with Emilia-sized audio."""
    rng = random.Random(args.seed + 1)
    sizes = (args.audio_kib_min * 1024, args.audio_kib_max * 1024)
    inp, out = build(
        root / "deep", args.deep_tars, args.deep_keys, args.format,
        lambda: rng.randbytes(rng.randint(*sizes)), args.seed + 2,
    )  # fmt: skip
    url_in, url_out = upload(inp, "deep-in"), upload(out, "deep-out")
    tar_bytes = sum(p.stat().st_size for p in inp.glob("*.tar"))
    server.traffic.clear()
    seconds = run_command("verify --deep", url_in, url_out, access, args.jobs)
    requests, nbytes = server.traffic.under(f"/{BUCKET}/deep-in/")
    server.traffic.clear()
    tars = sorted(inp.glob("*.tar"))
    _, streamed_s = timed(lambda: [scan_tar(f"{url_in}/{p.name}", access=access) for p in tars])
    streamed_requests, streamed_bytes = server.traffic.under(f"/{BUCKET}/deep-in/")
    samples = args.deep_tars * args.deep_keys
    return {
        "tars": args.deep_tars,
        "samples": samples,
        "tar_bytes": tar_bytes,
        "ranged": {"seconds": seconds, "reads": requests, "bytes": nbytes},
        "streamed": {"seconds": streamed_s, "reads": streamed_requests, "bytes": streamed_bytes},
        "reads_per_sample": requests / samples,
        "bytes_per_sample": nbytes / samples,
    }


def emilia(local: dict, s3: dict | None, args: argparse.Namespace) -> list[tuple[str, str]]:
    """The measured figures scaled to Emilia, linearly in samples (in tars for a listing)."""
    scale = args.emilia_tars * args.emilia_keys / (args.tars * args.keys)
    rows = [(f"local {name}", f"{seconds * scale:,.0f} s") for name, seconds in local.items()]
    rows[0] = ("local status", f"{local['status'] * args.emilia_tars / args.tars:,.1f} s")
    if s3 is None:
        return rows
    tars_scale = args.emilia_tars / args.tars
    rows.append(("S3 status (one listing)", f"{s3['status']['seconds'] * tars_scale:,.1f} s, "
                 f"{math.ceil(args.emilia_tars * 3 / 1000)} list requests, 0 input bytes"))  # fmt: skip
    rows.append(
        (
            "S3 status --counts (reads)",
            f"{s3['status --counts']['output_bytes'] * scale / 1e9:,.1f} GB",
        )
    )
    rows.append(("S3 verify (input bytes)", f"{s3['verify']['input_bytes']} bytes"))
    rows.append(
        ("S3 verify (output bytes)", f"{s3['verify']['output_bytes'] * scale / 1e9:,.1f} GB")
    )
    deep = s3["deep"]
    samples = args.emilia_tars * args.emilia_keys
    reads = deep["reads_per_sample"] * samples
    rows.append(("S3 verify --deep", f"{reads / 1e6:,.1f} M ranged GETs, "
                 f"{deep['bytes_per_sample'] * samples / 1e9:,.0f} GB"))  # fmt: skip
    for latency_ms, inflight in ((20, 16), (20, 64)):
        hours = reads * latency_ms / 1000 / inflight / 3600
        rows.append((f"  at {latency_ms} ms a GET, {inflight} at once", f"{hours:,.1f} h"))
    streamed_per_sample = deep["streamed"]["bytes"] / deep["samples"]
    rows.append(("S3 streamed scan (before)", f"{streamed_per_sample * samples / 1e12:,.1f} TB "
                 "(every tar read through)"))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tars", type=int, default=200)
    parser.add_argument("--keys", type=int, default=2000, help="samples per tar")
    parser.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--s3", action="store_true", help="also from a local S3 server")
    parser.add_argument("--deep-tars", type=int, default=2)
    parser.add_argument("--deep-keys", type=int, default=200)
    parser.add_argument("--audio-kib-min", type=int, default=60)
    parser.add_argument("--audio-kib-max", type=int, default=120)
    parser.add_argument("--emilia-tars", type=int, default=2360)
    parser.add_argument("--emilia-keys", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="tartok-bench-verify-"))
    tiny = random.Random(args.seed)
    (inp, out), build_s = timed(
        lambda: build(
            root, args.tars, args.keys, args.format, lambda: tiny.randbytes(64), args.seed
        )
    )
    out_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        f"{args.tars} tars x {args.keys} keys ({args.format}), {out_bytes / 1e6:,.1f} MB of "
        f"output, built in {build_s:.0f} s; jobs {args.jobs}"
    )
    local = {name: run_command(name, inp, out, None, args.jobs) for name in COMMANDS}
    s3 = on_s3(inp, out, args, root) if args.s3 else None

    print(f"{'command':16} {'local s':>8} {'S3 s':>8} {'S3 requests':>12} {'S3 input':>9} "
          f"{'input bytes':>12} {'output MB':>10}")  # fmt: skip
    for name, seconds in local.items():
        remote = (s3 or {}).get(name)
        cells = ["-"] * 5 if remote is None else [
            f"{remote['seconds']:.2f}", f"{remote['requests']:,}", f"{remote['input_requests']:,}",
            f"{remote['input_bytes']:,}", f"{remote['output_bytes'] / 1e6:,.1f}",
        ]  # fmt: skip
        print(f"{name:16} {seconds:8.2f} {cells[0]:>8} {cells[1]:>12} {cells[2]:>9} "
              f"{cells[3]:>12} {cells[4]:>10}")  # fmt: skip
    if s3 is not None:
        deep = s3["deep"]
        print(
            f"\n--deep over S3, {deep['tars']} tars x {deep['samples'] // deep['tars']} samples of "
            f"{args.audio_kib_min}-{args.audio_kib_max} KiB audio ({deep['tar_bytes'] / 1e6:,.1f} MB):"
        )
        for how in ("ranged", "streamed"):
            d = deep[how]
            print(
                f"  {how:9} {d['seconds']:6.2f} s {d['reads']:7,} GETs {d['bytes'] / 1e6:9,.2f} MB "
                f"({d['bytes'] / deep['tar_bytes']:.1%} of the tars)"
            )
    print(f"\nScaled to Emilia ({args.emilia_tars:,} tars x {args.emilia_keys:,} keys):")
    for name, value in emilia(local, s3, args):
        print(f"  {name:34} {value}")
    print(json.dumps({"local_seconds": local, "s3": s3}, default=str))


if __name__ == "__main__":
    main()

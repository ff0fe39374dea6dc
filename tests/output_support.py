"""What the output tests share: an Emilia-like metadata record, the files of a tree, a
small tar, and a tar processed as a worker would, minus the model."""

from __future__ import annotations

from pathlib import Path

from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.output.tarmeta import input_identity
from tartok_tui.output.writer import TarWriter, make_record
from tartok_tui.shards.reader import TarDamage, iter_samples, scan_tar

EMILIA_META = {
    "id": "EN_B00000_S00000_W000000",
    "wav": "EN_B00000/x.mp3",
    "text": "héllo wörld 你好",
    "duration": 3.25,
    "speaker": "EN_B00000_S00000",
    "language": "en",
    "dnsmos": 3.1,
}


def files_under(root: Path) -> list[str]:
    """Every file under ``root``, relative to it, sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def small_tar(path: Path, n: int, seed: int, **kwargs) -> list:
    """A quick tar of ``n`` short WAV clips."""
    return write_emilia_tar(path, n, seed=seed, audio_format="wav", min_s=0.3, max_s=0.5, **kwargs)


FINGERPRINT = "0123456789abcdef" * 2
"""A run manifest's fingerprint, for outputs written without a run."""


def process(
    inp: Path,
    out: Path,
    tar: Path,
    output_format: str = "jsonl",
    *,
    record: bool = True,
    scanned: bool = True,
) -> None:
    """What a worker does, minus the model: every sample gets a line or an error record,
    and the commit record holds the keys of a header scan (without ``scanned``, those the
    reader met, as over object storage) and the input's identity. Without ``record``: an
    output committed by a version before commit records."""
    fingerprint = FINGERPRINT if record else None
    with TarWriter(out, inp, tar, output_format=output_format, fingerprint=fingerprint) as writer:
        for item in iter_samples(tar):
            if isinstance(item, TarDamage):
                writer.add_error(None, None, "tar", item.reason)
            elif item.problem:
                writer.add_error(item.index, item.key, "sample", item.problem)
            else:
                writer.add(item.index, make_record(item.key, item.meta, [1, 2], [3, 4]))
        keys = scan_tar(tar).keys if scanned else None
        writer.commit(input_keys=keys, input_identity=input_identity(tar))


def tokens_output(
    root: Path,
    tars: dict[str, int],
    output_format: str = "jsonl",
    seed: int = 0,
    frames: tuple[int, int] = (20, 120),
) -> tuple[Path, dict[str, dict]]:
    """An output of committed tokens files, as a run leaves them, without running a model:
    ``tars`` maps a tar's path (``sub/X.tar``) to its sample count; languages, texts
    (some missing) and metadata vary, tokens are drawn over the whole codebooks.
    Returns (the output dir, key -> record)."""
    import random

    rng = random.Random(seed)
    inp, out = root / "in", root / "out"
    records: dict[str, dict] = {}
    for name, n in tars.items():
        tar = inp / name
        tar.parent.mkdir(parents=True, exist_ok=True)
        tar.write_bytes(b"")
        stem = name.removesuffix(".tar").replace("/", "_")
        with TarWriter(out, inp, tar, output_format=output_format) as writer:
            for i in range(n):
                meta = {
                    **EMILIA_META,
                    "id": f"{stem}_{i:04d}",
                    "language": rng.choice(["en", "zh", "de"]),
                    "text": None if i % 7 == 3 else f"sample {i} of {stem} — ünïcode",
                    "duration": round(rng.uniform(0.5, 3.0), 2),
                    "tags": {"n": i, "odd": bool(i % 2)},
                }
                record = make_record(
                    meta["id"],
                    meta,
                    [rng.randrange(4096) for _ in range(32)],
                    [rng.randrange(8192) for _ in range(rng.randint(*frames))],
                )
                writer.add(i, record)
                records[record["key"]] = record
            writer.commit()
    return out, records

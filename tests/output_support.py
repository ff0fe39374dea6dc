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

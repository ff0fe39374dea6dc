"""Tars as people make them, for the reader's tests: GNU tar over a directory, Python's
tarfile with members in any order, gzip, truncation."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

GNU_TAR = shutil.which("tar")
needs_gnu_tar = pytest.mark.skipif(
    GNU_TAR is None
    or "GNU tar"
    not in subprocess.run([GNU_TAR, "--version"], capture_output=True, text=True).stdout,
    reason="GNU tar is not installed",
)


@dataclass(frozen=True)
class Written:
    """One sample written into a directory: its key (as the reader names it) and contents."""

    key: str
    audio: bytes
    meta: dict


def sample_dir(
    root: Path, n: int, *, audio_ext: str = "mp3", long_paths: bool = False, txt: bool = True
) -> list[Written]:
    """``<key>.<audio_ext>`` + ``<key>.json`` (+ ``<key>.txt``) files under ``root``.

    Files are created one extension at a time (every JSON, then every audio file, then the
    texts), so that no filesystem's directory order puts a sample's files next to each other.
    With ``long_paths`` they sit in a directory whose path makes each member path longer
    than the 100 bytes a plain tar header holds.
    """
    base = root / ("speaker_" + "x" * 90 if long_paths else "")
    base.mkdir(parents=True, exist_ok=True)
    prefix = base.relative_to(root).as_posix() + "/" if long_paths else ""
    written = [
        Written(
            key=f"{prefix}utt_{i:04d}",
            audio=f"audio of {i} ".encode() * (50 + 37 * i),
            meta={"id": i, "text": f"sample {i}"},
        )
        for i in range(n)
    ]
    for w in written:
        (root / f"{w.key}.json").write_text(json.dumps(w.meta))
    for w in written:
        (root / f"{w.key}.{audio_ext}").write_bytes(w.audio)
    if txt:
        for w in written:
            (root / f"{w.key}.txt").write_text(w.meta["text"])
    return written


def gnu_tar(
    src: Path, out: Path, fmt: str = "gnu", *, sort: bool = False, gzip: bool = False
) -> Path:
    """``tar cf OUT -C SRC .``: members in directory order (``--sort=name`` with ``sort``),
    named ``./<path>``."""
    assert GNU_TAR is not None
    args = [GNU_TAR, f"--format={fmt}", "-c", "-f", str(out), "-C", str(src)]
    if sort:
        args.append("--sort=name")
    if gzip:
        args.append("-z")
    subprocess.run([*args, "."], check=True)
    return out


def member_order(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return [m.name for m in tar.getmembers() if m.isreg()]


def python_tar(path: Path, members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT) -> Path:
    """A tar of (name, data) members in the given order."""
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def shuffled_members(written: list[Written], audio_ext: str = "wav") -> list[tuple[str, bytes]]:
    """Every JSON member first, then every audio member: no sample's members adjacent."""
    return [(f"{w.key}.json", json.dumps(w.meta).encode()) for w in written] + [
        (f"{w.key}.{audio_ext}", w.audio) for w in written
    ]


def written_samples(n: int) -> list[Written]:
    return [Written(f"k{i:03d}", f"audio {i} ".encode() * (20 + i), {"id": i}) for i in range(n)]


def truncate(src: Path, dst: Path, size: int) -> Path:
    with open(src, "rb") as f:
        dst.write_bytes(f.read(size))
    return dst


def huge_member_header(name: str, claimed_size: int) -> bytes:
    """A member header claiming ``claimed_size`` bytes of data (none follows it here)."""
    info = tarfile.TarInfo(name)
    info.size = claimed_size
    return info.tobuf(format=tarfile.GNU_FORMAT)

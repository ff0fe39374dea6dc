"""Stream the samples of a webdataset-style tar, one at a time, never extracting.

A sample is a run of adjacent regular members sharing a key: the member path up
to the first dot of its base name, directory included (``EN/abc.mp3`` and
``EN/abc.json`` form the sample ``EN/abc``). Members whose base name has no dot
(or starts with one) belong to no sample and are skipped, as webdataset does.

Damage never escapes as an exception: a truncated or corrupt tar, a file that
is no tar at all, and a tar without samples end the iteration with a
:class:`TarDamage`. A sample is only yielded once the next key starts or the
archive ends with its end-of-archive marker, so a sample cut by the damage is
never passed on as good; the damage record names it instead.
"""

from __future__ import annotations

import json
import lzma
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tartok_tui.config import DEFAULT_AUDIO_EXTS

__all__ = [
    "DEFAULT_AUDIO_EXTS",
    "Sample",
    "TarDamage",
    "TarScan",
    "count_samples",
    "iter_samples",
    "scan_tar",
    "split_key",
]

# What a damaged or foreign file can raise from inside tarfile and its
# decompressors. OSError covers bz2 and gzip stream errors; ValueError covers
# undecodable names. Opening the file itself happens outside these guards, so a
# missing or unreadable path still raises to the caller.
_DAMAGE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


@dataclass
class Sample:
    """One sample of a tar. ``problem`` set means: write an error record, not tokens."""

    index: int
    """Position among the tar's samples, counting samples with problems too."""
    key: str
    meta: dict | None
    audio: bytes | None
    audio_ext: str | None
    problem: str | None = None


@dataclass
class TarDamage:
    """The tar could not be read past this point; always the iterator's last item."""

    after_index: int
    """How many samples were yielded before the damage (= the index the next one would have had)."""
    reason: str


@dataclass
class TarScan:
    """Sample keys of a tar from its member headers alone (see :func:`scan_tar`)."""

    keys: list[str]
    damage: TarDamage | None = None

    @property
    def count(self) -> int:
        return len(self.keys)


def split_key(name: str) -> tuple[str, str] | None:
    """``"dir/abc.x.mp3"`` -> ``("dir/abc", "x.mp3")``; None when the name has no key."""
    directory, slash, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not stem or not dot:
        return None
    return directory + slash + stem, ext


class _RecordingTarInfo(tarfile.TarInfo):
    """TarInfo that leaves the last header error on the TarFile.

    ``TarFile.next()`` turns a missing, truncated or corrupt header after the
    first member into a silent end of iteration, exactly like a proper
    end-of-archive block. Recording the error is the only way to tell the two
    apart without re-parsing headers ourselves.
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        tarfile_.tartok_header_error = None  # type: ignore[attr-defined]
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as exc:
            tarfile_.tartok_header_error = exc  # type: ignore[attr-defined]
            raise


def _end_damage(tf: tarfile.TarFile) -> str | None:
    """Why the member iteration stopped, or None when it met the end-of-archive block."""
    error = getattr(tf, "tartok_header_error", None)
    if error is None or isinstance(error, tarfile.EOFHeaderError):
        return None
    if isinstance(error, tarfile.EmptyHeaderError):
        return "unexpected end of file (no end-of-archive marker)"
    return f"corrupt header: {error}"


@dataclass
class _Group:
    key: str
    members: dict[str, bytes | None] = field(default_factory=dict)
    """ext -> data (None when the data was not read); first occurrence wins."""
    names: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


def _groups(tf: tarfile.TarFile, wanted: frozenset[str] | None) -> Iterator[_Group | TarDamage]:
    """Group adjacent members by key; read the data of extensions in ``wanted`` only.

    Yields complete groups, then a TarDamage if the archive did not end cleanly
    (including an archive with no group at all). Indices count groups.
    """
    current: _Group | None = None
    count = 0

    def damage(reason: str) -> TarDamage:
        if current is not None:
            reason = f"{reason}; sample {current.key!r} is incomplete"
        return TarDamage(count, reason)

    while True:
        try:
            member = tf.next()
        except _DAMAGE_ERRORS as exc:
            yield damage(f"truncated or corrupt tar: {exc}")
            return
        # tarfile keeps every member it has seen; we never look back, and a tar
        # holds ~50k members, so drop them to keep memory flat.
        tf.members.clear()
        if member is None:
            reason = _end_damage(tf)
            if reason is not None:
                yield damage(reason)
                return
            if current is not None:
                yield current
                count += 1
                current = None
            if count == 0:
                yield TarDamage(0, "empty tar: no samples")
            return
        if not member.isreg():
            continue
        parts = split_key(member.name)
        if parts is None:
            continue
        key, ext = parts
        ext = ext.lower()
        if current is not None and current.key != key:
            yield current
            count += 1
            current = None
        if current is None:
            current = _Group(key)
        current.names.append(member.name)
        if ext in current.members:
            current.duplicates.append(member.name)
            continue
        data: bytes | None = None
        if wanted is not None and ext in wanted:
            try:
                fileobj = tf.extractfile(member)
                data = fileobj.read() if fileobj is not None else b""
            except _DAMAGE_ERRORS as exc:
                yield damage(f"truncated or corrupt tar in member {member.name!r}: {exc}")
                return
        current.members[ext] = data


def _sample(group: _Group, index: int, audio_exts: Sequence[str], seen: dict[str, int]) -> Sample:
    problems: list[str] = []
    meta: dict | None = None
    raw = group.members.get("json")
    if raw is None:
        problems.append("no json member")
    else:
        try:
            parsed = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"invalid JSON: {exc}")
        else:
            if isinstance(parsed, dict):
                meta = parsed
            else:
                problems.append(f"JSON metadata is a {type(parsed).__name__}, not an object")
    audio: bytes | None = None
    audio_ext: str | None = None
    for ext in audio_exts:
        if ext in group.members:
            audio, audio_ext = group.members[ext], ext
            break
    if audio is None:
        problems.append(f"no audio member (looked for {', '.join(audio_exts)})")
    if group.duplicates:
        problems.append(f"duplicate members: {', '.join(group.duplicates)}")
    if group.key in seen:
        # Output is keyed; a second sample with one key would look like a duplicate
        # line to every consumer, so it gets an error record instead of tokens.
        problems.append(f"key repeats sample {seen[group.key]} (not adjacent to it)")
    else:
        seen[group.key] = index
    return Sample(
        index=index,
        key=group.key,
        meta=meta,
        audio=audio,
        audio_ext=audio_ext,
        problem="; ".join(problems) or None,
    )


def iter_samples(
    tar_path: Path | str, audio_exts: Sequence[str] = DEFAULT_AUDIO_EXTS
) -> Iterator[Sample | TarDamage]:
    """Stream the samples of ``tar_path`` (plain or compressed) in member order.

    ``audio_exts`` is a preference order: a sample's audio is the first of them
    it has. Samples with a problem (no audio, no or invalid JSON, duplicate
    members or key) are yielded with ``problem`` set. A TarDamage, if any, is the
    last item. Only OSError from opening the path propagates.
    """
    exts = tuple(e.lower().lstrip(".") for e in audio_exts)
    wanted = frozenset((*exts, "json"))
    seen: dict[str, int] = {}
    with open(tar_path, "rb") as raw:
        try:
            # Entered by the `with tf:` below; only the open belongs in this try.
            tf = tarfile.open(fileobj=raw, mode="r|*", tarinfo=_RecordingTarInfo)  # noqa: SIM115
        except _DAMAGE_ERRORS as exc:
            yield TarDamage(0, f"not a readable tar: {exc}")
            return
        with tf:
            for index, item in enumerate(_groups(tf, wanted)):
                if isinstance(item, TarDamage):
                    yield item
                    return
                yield _sample(item, index, exts, seen)


def scan_tar(tar_path: Path | str) -> TarScan:
    """The keys :func:`iter_samples` would yield, from member headers alone.

    Seeks over member data instead of reading it, so it costs one read per
    member header. Damage is detected the same way as when streaming.
    """
    keys: list[str] = []
    with open(tar_path, "rb") as raw:
        try:
            tf = tarfile.open(fileobj=raw, mode="r:*", tarinfo=_RecordingTarInfo)  # noqa: SIM115
        except _DAMAGE_ERRORS as exc:
            return TarScan(keys, TarDamage(0, f"not a readable tar: {exc}"))
        with tf:
            for item in _groups(tf, None):
                if isinstance(item, TarDamage):
                    return TarScan(keys, item)
                keys.append(item.key)
    return TarScan(keys)


def count_samples(tar_path: Path | str) -> int:
    """How many samples (good or with a problem) the tar yields before any damage."""
    return scan_tar(tar_path).count

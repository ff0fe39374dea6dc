"""The samples of a webdataset-style tar, one at a time, never extracting.

A sample is the set of regular members sharing a key: the member path up to the first dot of
its base name, directory included (``EN/abc.mp3`` and ``EN/abc.json`` form the sample
``EN/abc``). Members whose base name has no dot (or starts with one) belong to no sample and
are skipped, as webdataset does.

Two ways to read a tar:

- **streaming** (the default, the fast path): members are read front to back and a sample is
  a run of adjacent members. Plain, ``.tar.gz``/``.tgz`` (and bz2/xz) tars, local or remote.
- **indexed** (``indexed=True``): every member header is read first, seeking over the data,
  members are grouped by key wherever they lie, and the samples come in order of their key's
  first appearance. For tars packed from a directory (``tar cf``), whose members follow the
  directory's order. A compressed tar is first decompressed into a temporary file.

The contract for a caller (the worker):

1. Stream the tar. If the last item is :class:`Ungrouped`, the tar is not grouped by sample:
   discard what was produced for it (its samples may be incomplete) and read it again with
   ``indexed=True``. Ungrouped comes as soon as a finished key reappears, before anything of
   that second run is yielded; the indexed read never yields it.
2. :class:`TarDamage` (truncated, corrupt, not a tar, no samples) ends the iteration; the
   samples before it are complete and good. The sample that the damage may have cut is not
   yielded; the damage's reason names it.
3. Reading an input that is unavailable (an I/O error, a network failure after retries)
   raises :class:`InputUnavailable` (an OSError), never TarDamage; opening a missing local
   file raises its OSError. Neither says anything about the tar: do not commit it.
4. A JSON member over ``max_json_bytes`` or an audio member over ``max_audio_bytes`` is not
   read at all; its sample comes with a ``problem``.
5. A JSON member that cannot be parsed (whatever the parser raises, MemoryError aside) or
   whose metadata could not be written out gives its sample a ``problem``: one member's
   content never ends the iteration.

:func:`scan_tar` lists the keys both ways yield (they agree) from the headers alone, for the
progress count and ``verify``.
"""

from __future__ import annotations

import itertools
import json
import os
import tarfile
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace

from tartok_tui.config import DEFAULT_AUDIO_EXTS
from tartok_tui.shards.compression import compression, spool
from tartok_tui.shards.grouping import EMPTY, Group, Refused, Wants, split_key, stream_groups
from tartok_tui.shards.indexed import TarIndex, index_headers, indexed_groups
from tartok_tui.shards.items import Sample, TarDamage, Ungrouped
from tartok_tui.shards.tario import ByteSource, is_damage, open_seekable, open_stream
from tartok_tui.storage.errors import InputUnavailable
from tartok_tui.storage.reading import Access, open_input
from tartok_tui.storage.urls import is_url

__all__ = [
    "DEFAULT_AUDIO_EXTS",
    "DEFAULT_MAX_AUDIO_BYTES",
    "DEFAULT_MAX_JSON_BYTES",
    "EMPTY",
    "InputUnavailable",
    "Sample",
    "TarDamage",
    "TarScan",
    "Ungrouped",
    "count_samples",
    "iter_samples",
    "scan_tar",
    "split_key",
]

DEFAULT_MAX_JSON_BYTES = 64 << 20
DEFAULT_MAX_AUDIO_BYTES = 2 << 30
HEADER_WINDOW = 4 << 10
"""Bytes a ranged header scan fetches from a header on: the header (512), a small member
(JSON metadata of up to ~3 KiB) and the next header, in one request."""
MAX_JSON_DEPTH = 100
"""JSON metadata nested deeper than this is a sample's problem (see :func:`_unwritable`)."""

Location = str | os.PathLike[str]
"""A local path, or a URL string (``s3://...``): URLs are never turned into Paths."""


@dataclass
class TarScan:
    """Sample keys of a tar from its member headers alone (see :func:`scan_tar`)."""

    keys: list[str]
    damage: TarDamage | None = None
    grouped: bool = True
    """False when streaming would stop with Ungrouped (the keys are then the indexed read's)."""
    compressed: bool = False
    """The tar is compressed: its headers were found by reading all of it through."""

    @property
    def count(self) -> int:
        return len(self.keys)


def _metadata(raw: bytes) -> tuple[dict | None, str | None]:
    """A JSON member's metadata, or why the sample has none it can use.

    Whatever parsing raises is this member's problem alone (json.loads raises
    RecursionError, not ValueError, for deep nesting), except MemoryError: the host's,
    not the sample's. Metadata parsed is also checked to be writable by every output
    format, so that it cannot fail its whole tar at the writer."""
    try:
        parsed = json.loads(raw)
    except MemoryError:
        raise
    except Exception as exc:
        detail = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        return None, f"invalid JSON: {detail}"
    if not isinstance(parsed, dict):
        return None, f"JSON metadata is a {type(parsed).__name__}, not an object"
    problem = _unwritable(parsed)
    if problem is not None:
        return None, f"unwritable JSON metadata: {problem}"
    return parsed, None


def _unwritable(value: dict | list) -> str | None:
    """Why parsed JSON cannot be written back out, or None.

    Nested deeper than MAX_JSON_DEPTH: encoders recurse per level from wherever they are
    called, so what json.loads just managed may fail later at the writer. A string that
    is not valid Unicode (a lone surrogate from a ``\\ud800`` escape) cannot be UTF-8.
    Walked with a stack, not recursion, for the same reason."""
    stack: list[tuple[dict | list, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"nested deeper than {MAX_JSON_DEPTH} levels"
        items = (
            itertools.chain.from_iterable(container.items())
            if isinstance(container, dict)
            else container
        )
        for item in items:
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return f"a string that is not valid Unicode: {item[:40]!r}"
            elif isinstance(item, (dict, list)):
                stack.append((item, depth + 1))
    return None


def _sample(group: Group, index: int, wants: Wants) -> Sample:
    problems: list[str] = []
    meta: dict | None = None
    raw = group.members.get("json")
    if raw is None:
        problems.append("no json member")
    elif isinstance(raw, Refused):
        problems.append(raw.reason)
    else:
        meta, problem = _metadata(raw)
        if problem is not None:
            problems.append(problem)
    audio: bytes | None = None
    audio_ext: str | None = None
    found = next((ext for ext in wants.audio_exts if ext in group.members), None)
    if found is None:
        problems.append(f"no audio member (looked for {', '.join(wants.audio_exts)})")
    else:
        data = group.members[found]
        audio_ext = found
        if isinstance(data, Refused):
            problems.append(data.reason)
        else:
            audio = data
    if group.duplicates:
        problems.append(f"duplicate members: {', '.join(group.duplicates)}")
    if problems and group.note:
        problems.append(group.note)
    return Sample(
        index=index,
        key=group.key,
        meta=meta,
        audio=audio,
        audio_ext=audio_ext,
        problem="; ".join(problems) or None,
    )


def _open_tar(
    raw: ByteSource, opener: Callable[[ByteSource], tarfile.TarFile]
) -> tarfile.TarFile | TarDamage:
    """``opener(raw)``, or the damage when ``raw`` is not a readable tar (other errors,
    such as an unreachable input, raise)."""
    try:
        return opener(raw)
    except Exception as exc:
        if not is_damage(exc):
            raise
        return TarDamage(0, f"not a readable tar: {exc}")


def _streamed(
    tar: Location, wants: Wants, access: Access | None
) -> Generator[Group | TarDamage | Ungrouped, None, None]:
    with open_input(tar, sequential=True, access=access) as raw:
        tf = _open_tar(raw, open_stream)
        if isinstance(tf, TarDamage):
            yield tf
            return
        with tf:
            yield from stream_groups(tf, wants)


def _index(
    raw: ByteSource, opener: Callable[[ByteSource], tarfile.TarFile] = open_seekable
) -> TarIndex | TarDamage:
    tf = _open_tar(raw, opener)
    if isinstance(tf, TarDamage):
        return tf
    with tf:
        return index_headers(tf)


def _indexed(
    tar: Location, wants: Wants, access: Access | None, spool_dir: str | None
) -> Generator[Group | TarDamage, None, None]:
    # Closing this generator closes indexed_groups (its range readers) before the files.
    with ExitStack() as stack:
        yield from _indexed_in(stack, tar, wants, access, spool_dir)


def _indexed_in(
    stack: ExitStack,
    tar: Location,
    wants: Wants,
    access: Access | None,
    spool_dir: str | None,
) -> Iterator[Group | TarDamage]:
    spool_error: str | None = None
    data: ByteSource
    # Headers are read front to back (read-ahead pays on remote storage), then the data
    # where the index says (exact ranges); a compressed tar is first decompressed to a spool.
    with open_input(tar, sequential=True, access=access) as source:
        kind = compression(source)
        if kind is None:
            index = _index(source)
        else:
            data, spool_error = spool(source, kind, spool_dir)
            stack.enter_context(data)
    if kind is None:
        # Entered apart: enter_context() would type a LocalInput | RemoteInput as object.
        data = open_input(tar, sequential=False, access=access)
        stack.enter_context(data)
    else:
        index = _index(data)
    if isinstance(index, TarDamage):
        yield TarDamage(0, f"not a readable tar: {spool_error}") if spool_error else index
        return
    if index.damage is not None and spool_error is not None:
        index.damage = f"{spool_error} ({index.damage})"
    tf = stack.enter_context(open_seekable(data))  # for sparse members, which tarfile reads
    yield from indexed_groups(tf, data, index, wants, getattr(data, "parallel_reads", 1))


def iter_samples(
    tar: Location,
    audio_exts: Sequence[str] = DEFAULT_AUDIO_EXTS,
    *,
    indexed: bool = False,
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
    max_audio_bytes: int = DEFAULT_MAX_AUDIO_BYTES,
    access: Access | None = None,
    spool_dir: str | None = None,
) -> Iterator[Sample | TarDamage | Ungrouped]:
    """The samples of ``tar`` (a path or URL): streamed, or ``indexed`` (see the module doc).

    ``audio_exts`` is a preference order: a sample's audio is the first of them it has.
    Samples with a problem (no audio, no, invalid or oversized JSON, oversized audio,
    duplicate members) are yielded with ``problem`` set. A TarDamage or an Ungrouped, if
    any, is the last item. ``spool_dir``: where an indexed read decompresses a compressed
    tar (default: the system's temporary directory).
    """
    wants = Wants(tuple(e.lower().lstrip(".") for e in audio_exts), max_json_bytes, max_audio_bytes)
    groups: Generator[Group | TarDamage | Ungrouped, None, None] = (
        _indexed(tar, wants, access, spool_dir) if indexed else _streamed(tar, wants, access)
    )
    try:
        for index, item in enumerate(groups):
            if isinstance(item, (TarDamage, Ungrouped)):
                yield item
                return
            yield _sample(item, index, wants)
    finally:
        groups.close()


def scan_tar(tar: Location, *, access: Access | None = None, ranged: bool = False) -> TarScan:
    """The keys :func:`iter_samples` yields, from member headers alone.

    For a grouped tar, the streamed keys; for one that is not, the indexed read's (which the
    worker ends up doing). An uncompressed tar's headers are reached by seeking over the
    data (one read per member header locally); a compressed one is read through.

    On object storage an uncompressed tar is read ahead like a stream (``access``), so
    members smaller than the read-ahead are downloaded with the headers; ``ranged`` reads
    each header with a ranged request of HEADER_WINDOW bytes instead, which also holds a
    small member (a JSON) and the header after it: about one request per sample and a few
    KiB of a sample's hundreds. A compressed tar is streamed either way (``compressed``).
    """
    opened = replace(access or Access(), read_ahead=HEADER_WINDOW) if ranged else access
    with open_input(tar, sequential=True, access=opened) as raw:
        kind = compression(raw)
        index = _index(raw, open_seekable) if kind is None else None
        if index is None and not (ranged and is_url(tar)):
            index = _index(raw, open_stream)
    if index is None:  # a compressed tar opened for ranged reads: stream it instead
        with open_input(tar, sequential=True, access=access) as raw:
            index = _index(raw, open_stream)
    if isinstance(index, TarDamage):
        return TarScan([], index, compressed=kind is not None)
    keys = list(index.groups)
    damage = None
    if index.damage is not None:
        damage = TarDamage(len(keys), index.damage)
    elif not keys:
        damage = TarDamage(0, EMPTY)
    return TarScan(keys, damage, index.grouped, compressed=kind is not None)


def count_samples(tar: Location, *, access: Access | None = None) -> int:
    """How many samples (good or with a problem) the tar yields before any damage."""
    return scan_tar(tar, access=access).count

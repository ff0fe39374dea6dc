"""Members -> groups of one key: what a sample is made of, and the streaming grouping.

Streaming groups adjacent members and stops with :class:`Ungrouped` when a finished key comes
back (the indexed grouping is in :mod:`tartok_tui.shards.indexed`). Both read only the data
of wanted extensions within their size limits, and both hold back the sample of the last
member before damage (more of its members may have followed), so both yield the keys that
:func:`tartok_tui.shards.indexed.index_headers` lists.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from tartok_tui.shards.items import TarDamage, Ungrouped
from tartok_tui.shards.tario import End, is_damage, iter_headers, read_member

EMPTY = "empty tar: no samples"


def split_key(name: str) -> tuple[str, str] | None:
    """``"dir/abc.x.mp3"`` -> ``("dir/abc", "x.mp3")``; None when the name has no key.

    A leading ``./`` (``tar cf x.tar -C dir .``) is not part of the key.
    """
    while name.startswith("./"):
        name = name[2:]
    directory, slash, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not stem or not dot:
        return None
    return directory + slash + stem, ext


def keyed_name(member: tarfile.TarInfo) -> tuple[str, str] | None:
    """(key, lower-case extension) of a member that belongs to a sample, else None."""
    if not member.isreg():
        return None
    parts = split_key(member.name)
    return None if parts is None else (parts[0], parts[1].lower())


@dataclass(frozen=True)
class Wants:
    """Which members' data to read, and the most bytes each may have."""

    audio_exts: tuple[str, ...]
    max_json_bytes: int
    max_audio_bytes: int

    def refusal(self, name: str, ext: str, size: int) -> str | None:
        """Why this member's data is not read; None to read it. Call for wanted ones only."""
        limit, kind = (
            (self.max_json_bytes, "JSON") if ext == "json" else (self.max_audio_bytes, "audio")
        )
        if size > limit:
            return f"{kind} member {name} is {size / 2**20:.1f} MiB, over the {limit / 2**20:g} MiB limit"
        return None

    def wanted(self, ext: str) -> bool:
        return ext == "json" or ext in self.audio_exts


@dataclass(frozen=True)
class Refused:
    """A wanted member whose data was not read."""

    reason: str


@dataclass
class Group:
    """The members of one key."""

    key: str
    members: dict[str, bytes | Refused | None] = field(default_factory=dict)
    """ext -> data (None when not wanted); the first member with an extension wins."""
    names: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    note: str | None = None
    """Added to the sample's problem, if it has one."""


def incomplete(reason: str, key: str | None) -> str:
    return reason if key is None else f"{reason}; sample {key!r} is incomplete"


# -- streaming --------------------------------------------------------------------------------


def stream_groups(tf: tarfile.TarFile, wants: Wants) -> Iterator[Group | TarDamage | Ungrouped]:
    """Adjacent runs of one key, then a TarDamage if the archive did not end cleanly
    (including an archive with no group at all), or an Ungrouped as soon as a finished key
    comes back. Raises InputUnavailable; never raises for damage."""
    current: Group | None = None
    finished: set[str] = set()
    count = 0
    for item in iter_headers(tf):
        if isinstance(item, End):
            if item.damage is not None:
                yield TarDamage(
                    count, incomplete(item.damage, None if current is None else current.key)
                )
            elif current is not None:
                yield current
            elif count == 0:
                yield TarDamage(0, EMPTY)
            return
        keyed = keyed_name(item)
        if keyed is None:
            continue
        key, ext = keyed
        if current is not None and current.key != key:
            yield current
            finished.add(current.key)
            count += 1
            current = None
        if current is None:
            if key in finished:
                yield Ungrouped(count, key, item.name)
                return
            current = Group(key)
        current.names.append(item.name)
        if ext in current.members:
            current.duplicates.append(item.name)
            continue
        data: bytes | Refused | None = None
        if wants.wanted(ext):
            data = _refusal(item, ext, wants)
            if data is None:
                try:
                    data = read_member(tf, item)
                except Exception as exc:
                    if not is_damage(exc):
                        raise
                    reason = f"truncated or corrupt tar in member {item.name!r}: {exc}"
                    yield TarDamage(count, incomplete(reason, key))
                    return
        current.members[ext] = data


def _refusal(member: tarfile.TarInfo, ext: str, wants: Wants) -> Refused | None:
    reason = wants.refusal(member.name, ext, member.size)
    return None if reason is None else Refused(reason)

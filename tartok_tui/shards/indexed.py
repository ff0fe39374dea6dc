"""The indexed grouping: every member header first, then each sample's data where it lies.

For tars whose members are not grouped by sample (packed from a directory). The header pass
seeks over the data; members are grouped by key in order of first appearance; the data pass
reads each member's byte range. On object storage each range is one request, so several
samples are read ahead in parallel (bounded in count and bytes) while the caller works on
the first; locally they are read one after another.
"""

from __future__ import annotations

import tarfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from tartok_tui.shards.grouping import EMPTY, Group, Refused, Wants, incomplete, keyed_name
from tartok_tui.shards.items import TarDamage
from tartok_tui.shards.tario import End, is_damage, iter_headers, read_member
from tartok_tui.storage.reading import pread_chunks

READ_AHEAD_BYTES = 64 << 20
"""The most member data read ahead of the caller (at least one sample is, whatever its size)."""
_DAMAGED = "the tar is damaged; more of this sample's members may lie past the damage"


@dataclass(frozen=True)
class MemberRef:
    """Where a member's data lies."""

    name: str
    ext: str
    offset: int
    size: int
    sparse: tarfile.TarInfo | None = None
    """The header of a sparse member, whose data only tarfile can put together."""


@dataclass
class TarIndex:
    """A tar's members grouped by key, from its headers alone."""

    groups: dict[str, list[MemberRef]]
    """key -> members in tar order; keys in order of first appearance."""
    damage: str | None = None
    """Why the headers stop early (the held-back sample named), None for a clean end."""
    repeat: tuple[str, str] | None = None
    """The first (key, member) that came back after other keys' members; None when grouped."""

    @property
    def grouped(self) -> bool:
        return self.repeat is None


def index_headers(tf: tarfile.TarFile) -> TarIndex:
    """Read every member header. With damage, the key of the last member before it is
    left out, as streaming holds back its last sample. Raises InputUnavailable only."""
    groups: dict[str, list[MemberRef]] = {}
    last: str | None = None
    repeat: tuple[str, str] | None = None
    for item in iter_headers(tf):
        if isinstance(item, End):
            damage = item.damage
            if damage is not None:
                if last is not None:
                    del groups[last]
                damage = incomplete(damage, last)
            return TarIndex(groups, damage, repeat)
        keyed = keyed_name(item)
        if keyed is None:
            continue
        key, ext = keyed
        if repeat is None and key != last and key in groups:
            repeat = (key, item.name)
        sparse = item if item.issparse() else None
        groups.setdefault(key, []).append(
            MemberRef(item.name, ext, item.offset_data, item.size, sparse)
        )
        last = key
    raise AssertionError("iter_headers ends with End")  # pragma: no cover


@dataclass
class _Plan:
    """A group with its members decided, and the ranges still to read."""

    group: Group
    reads: list[MemberRef]

    @property
    def nbytes(self) -> int:
        return sum(ref.size for ref in self.reads)


def _plan(key: str, refs: list[MemberRef], wants: Wants, note: str | None) -> _Plan:
    group = Group(key, note=note)
    reads = []
    for ref in refs:
        group.names.append(ref.name)
        if ref.ext in group.members:
            group.duplicates.append(ref.name)
            continue
        group.members[ref.ext] = None
        if wants.wanted(ref.ext):
            reason = wants.refusal(ref.name, ref.ext, ref.size)
            if reason is not None:
                group.members[ref.ext] = Refused(reason)
            else:
                reads.append(ref)
    return _Plan(group, reads)


def range_reader(raw: Any) -> Callable[[int, int], bytes]:
    """``read(offset, size)`` over ``raw``: exactly ``size`` bytes (EOFError when the file
    ends first), safe to call from several threads."""
    method = getattr(raw, "read_range", None)
    if method is None:
        fd = raw.fileno()

        def method(offset: int, size: int) -> bytes:
            return b"".join(pread_chunks(fd, offset, size))

    def read(offset: int, size: int) -> bytes:
        data = method(offset, size)
        if len(data) != size:
            raise EOFError(f"unexpected end of data ({len(data)} of {size} bytes at {offset})")
        return data

    return read


def _planned_ahead(
    plans: Iterator[_Plan], load: Callable[[_Plan], dict[str, bytes]], parallel: int
) -> Iterator[tuple[_Plan, Callable[[], dict[str, bytes]]]]:
    """Each plan with a call that returns its data; with ``parallel`` > 1 the data of the
    next plans is being read meanwhile, up to 2 x parallel plans and READ_AHEAD_BYTES."""
    if parallel <= 1:
        for plan in plans:
            yield plan, partial(load, plan)
        return
    pool = ThreadPoolExecutor(parallel, thread_name_prefix="tar-ranges")
    pending: deque[tuple[_Plan, Future]] = deque()
    in_flight = 0
    try:
        for plan in plans:
            while pending and (
                len(pending) >= 2 * parallel or in_flight + plan.nbytes > READ_AHEAD_BYTES
            ):
                done, future = pending.popleft()
                in_flight -= done.nbytes
                yield done, future.result
            pending.append((plan, pool.submit(load, plan)))
            in_flight += plan.nbytes
        while pending:
            done, future = pending.popleft()
            yield done, future.result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def indexed_groups(
    tf: tarfile.TarFile, raw: Any, index: TarIndex, wants: Wants, parallel: int = 1
) -> Iterator[Group | TarDamage]:
    """The index's groups with their data, then a TarDamage for the index's damage (or an
    empty tar). ``raw``: the tar's bytes (``tf``'s file), read by ranges."""
    read = range_reader(raw)
    note = _DAMAGED if index.damage is not None else None  # any sample may miss members

    def load(plan: _Plan) -> dict[str, bytes]:
        return {r.ext: read(r.offset, r.size) for r in plan.reads if r.sparse is None}

    plans = (_plan(key, refs, wants, note) for key, refs in index.groups.items())
    count = 0
    for plan, result in _planned_ahead(plans, load, parallel):
        try:
            data = result()
            for ref in plan.reads:
                if ref.sparse is not None:  # tarfile is not for threads: read here
                    data[ref.ext] = read_member(tf, ref.sparse)
        except Exception as exc:
            if not is_damage(exc):
                raise
            reason = f"cannot read the members of {plan.group.key!r} again: {exc}"
            yield TarDamage(count, incomplete(reason, plan.group.key))
            return
        plan.group.members.update(data)
        yield plan.group
        count += 1
    if index.damage is not None:
        yield TarDamage(count, index.damage)
    elif count == 0:
        yield TarDamage(0, EMPTY)

"""A pane that follows the selected worker's log file, read without blocking the event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Unpack

import aiofiles
import aiofiles.os
from rich.text import Text
from textual.widgets import RichLog

from tartok_tui.tui.keywords import WidgetKeywords

START_BYTES = 64 * 1024
"""How much of an existing log is shown when the pane starts following it."""
CHUNK_BYTES = 256 * 1024
"""The most read per poll, so that a worker writing fast cannot stall the dashboard."""


@dataclass
class TailRead:
    lines: list[str] = field(default_factory=list)
    missing: bool = False
    """The file does not exist (yet: a worker's log appears when it first starts)."""
    restarted: bool = False
    """The file was truncated or replaced; ``lines`` are from its start."""


class LogTail:
    """What was appended to one file since the last read.

    The file is read through aiofiles (in a thread), so a slow disk or network
    filesystem never holds up the dashboard's event loop. A file that shrinks or is
    replaced by another one is read again from its start.
    """

    def __init__(
        self, path: Path, *, start_bytes: int = START_BYTES, chunk_bytes: int = CHUNK_BYTES
    ) -> None:
        self.path = path
        self.start_bytes = start_bytes
        self.chunk_bytes = chunk_bytes
        self._offset: int | None = None
        self._inode: int | None = None
        self._partial = b""
        self._skip_first = False

    async def read(self) -> TailRead:
        try:
            stat = await aiofiles.os.stat(self.path)
        except FileNotFoundError:
            self._offset = None
            self._partial = b""
            return TailRead(missing=True)
        restarted = False
        if self._offset is None:
            # Start near the end of what is there: the last lines are the interesting ones.
            self._offset = max(0, stat.st_size - self.start_bytes)
            self._skip_first = self._offset > 0  # most likely cut mid-line
            self._inode = stat.st_ino
        elif stat.st_ino != self._inode or stat.st_size < self._offset:
            # Truncated (copytruncate) or replaced: read the new contents from the start.
            # A truncation that grows back past our offset between two polls goes unseen.
            self._offset, self._inode, self._partial = 0, stat.st_ino, b""
            self._skip_first = False
            restarted = True
        if stat.st_size <= self._offset:
            return TailRead(restarted=restarted)
        async with aiofiles.open(self.path, "rb") as handle:
            await handle.seek(self._offset)
            data = await handle.read(self.chunk_bytes)
        self._offset += len(data)
        return TailRead(self._split(data), restarted=restarted)

    def _split(self, data: bytes) -> list[str]:
        *complete, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > self.chunk_bytes:  # a line without end: show it anyway
            complete.append(self._partial)
            self._partial = b""
        if self._skip_first and complete:
            complete = complete[1:]
            self._skip_first = False
        # Progress bars redraw with \r: what is after the last one is what a terminal shows.
        return [line.decode("utf-8", "replace").rsplit("\r", 1)[-1] for line in complete]


class WorkerLogPane(RichLog):
    """Follows one worker's log file while shown; switching worker starts over."""

    def __init__(self, *, poll_s: float = 0.5, **kwargs: Unpack[WidgetKeywords]) -> None:
        super().__init__(max_lines=2000, wrap=False, markup=False, highlight=False, **kwargs)
        self.poll_s = poll_s
        self.tail: LogTail | None = None
        self.slot: int | None = None
        self._said_missing = False
        self._problem: str | None = None
        self._reading = asyncio.Lock()  # a poll at once and the timer's must not read twice

    def on_mount(self) -> None:
        self.set_interval(self.poll_s, self.poll)

    def follow(self, slot: int, path: Path) -> None:
        """Show ``path`` (slot ``slot``'s log) from now on."""
        if self.tail is not None and (self.slot, self.tail.path) == (slot, path):
            return
        self.slot = slot
        self.tail = LogTail(path)
        self._said_missing = False
        self._problem = None
        self.clear()
        self.border_title = f"slot {slot} log: {path}"

    async def poll(self) -> None:
        """Append what was written since the last poll (only while the pane is shown)."""
        async with self._reading:
            await self._poll()

    async def _poll(self) -> None:
        tail = self.tail
        if tail is None or not self.display:
            return
        try:
            read = await tail.read()
        except OSError as exc:  # unreadable for now (permissions, a gone mount): say so, retry
            if tail is self.tail and self._problem != str(exc):
                self._problem = str(exc)
                self.write(Text(f"cannot read {tail.path}: {exc}", style="red"))
            return
        if tail is not self.tail:  # the selection moved while reading
            return
        self._problem = None
        if read.missing:
            if not self._said_missing:
                self.write(
                    Text(
                        f"{tail.path} does not exist yet (the worker may not have started, "
                        "or it runs on another node)",
                        style="dim",
                    )
                )
                self._said_missing = True
            return
        self._said_missing = False
        if read.restarted:
            self.write(Text("log truncated or replaced: reading it from its start", style="yellow"))
        for line in read.lines:
            self.write(Text(line))

"""The run's isolation journals on the supervisor's disk.

The queue keeps each isolated tar's journal in memory (``TarQueue``: the decided samples,
the sample its worker is in); this keeps them on the disk of the machine the supervisor
runs on (``output.journal``: the output directory, or the spool folder of an output
URL), so that a later run goes on where this one stopped. Writes go to one thread of
their own, in order: an fsync per decided sample must not hold up the event loop. A
journal that cannot be written is a warning, not a stop: this run goes on from memory,
and a later run would only redo those samples.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tartok_tui.output.journal import (
    JournalEntry,
    JournalError,
    append_journal,
    read_journal,
    remove_journal,
)
from tartok_tui.output.paths import PARTIAL_DIR, tar_output_paths
from tartok_tui.storage import Location, location_name

Report = Callable[[str, int | None, str], None]
JOURNAL_DIR = "journal"


class JournalStore:
    """The journal files of one run's tars; ``report(level, slot, message)`` is the
    supervisor's event log (called on the event loop's thread)."""

    def __init__(self, output_dir: Path, input_dir: Location, report: Report) -> None:
        self._output_dir = Path(output_dir)
        self._input_dir = input_dir
        self._report = report
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._warned: set[Path] = set()

    def path(self, tar: Location) -> Path:
        return tar_output_paths(self._output_dir, self._input_dir, tar).journal

    def load(
        self, todo: Sequence[Location], done: Iterable[Location]
    ) -> tuple[dict[Location, dict[int, JournalEntry]], list[str]]:
        """Blocking (run it in a thread): what earlier runs' journals decided about the tars
        still to do, and warnings. A journal that cannot be read is removed (it only saves
        work), and so is the journal of a tar already done."""
        root = self._output_dir / PARTIAL_DIR / JOURNAL_DIR
        if not root.is_dir():
            return {}, []
        found = set(root.rglob("*.journal"))
        journals: dict[Location, dict[int, JournalEntry]] = {}
        warnings: list[str] = []
        for tar in done:
            if self.path(tar) in found:
                _drop(self.path(tar), warnings)
        for tar in todo:
            path = self.path(tar)
            if path not in found:
                continue
            try:
                decided = read_journal(path)
            except (JournalError, OSError) as exc:
                warnings.append(
                    f"{location_name(tar)}: its isolation journal cannot be read ({exc}): "
                    "removed; the tar is isolated afresh if it kills workers again"
                )
                _drop(path, warnings)
                continue
            if decided:
                journals[tar] = decided
        return journals, warnings

    def record(self, tar: Location, entries: Sequence[JournalEntry]) -> None:
        """Append decided samples to the tar's journal (in the background, in order)."""
        path = self.path(tar)
        self._submit("write", path, append_journal, path, list(entries))

    def remove(self, tar: Location) -> None:
        """The tar is done: its journal, if it has one, has served (in the background)."""
        path = self.path(tar)
        self._submit("remove", path, remove_journal, path)

    async def close(self) -> None:
        """Wait for every write asked for so far."""
        await asyncio.to_thread(self._thread.shutdown, wait=True)

    def _submit(self, what: str, path: Path, fn: Callable[..., Any], *args: Any) -> None:
        future = asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        future.add_done_callback(lambda f: self._check(f, what, path))

    def _check(self, future: asyncio.Future[Any], what: str, path: Path) -> None:
        exc = None if future.cancelled() else future.exception()
        if exc is None or path in self._warned:
            return
        self._warned.add(path)
        self._report(
            "warning",
            None,
            f"could not {what} the isolation journal {path}: {exc} (isolation goes on from "
            "the supervisor's memory; a later run would redo its samples)",
        )


def _drop(path: Path, warnings: list[str]) -> None:
    try:
        remove_journal(path)
    except OSError as exc:
        warnings.append(f"could not remove the isolation journal {path}: {exc}")

"""What an export format implements: a writer per unit (one tokens file in, some files out)
and the final files written once every unit is done."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Protocol

from tartok_tui.export.destination import Destination
from tartok_tui.export.records import ExportTotals, Settings
from tartok_tui.output.manifest import Manifest
from tartok_tui.output.samples import Sample
from tartok_tui.output.target import PartialFile


class UnitWriter(Protocol):
    def add(self, sample: Sample) -> bool:
        """Write one sample; False when the format skips it (counted, never silent)."""
        ...

    def finish(self) -> list[PartialFile]:
        """Complete every file; they are published in the order returned."""
        ...

    def abort(self) -> None:
        """Drop every partial file (the unit is redone from its start)."""
        ...


class ExportFormat(Protocol):
    name: str

    def unit(self, stem: PurePosixPath, dest: Destination) -> UnitWriter:
        """The writer of the unit made from the tokens file ``stem.*``."""
        ...

    def finish(
        self, dest: Destination, totals: ExportTotals, settings: Settings, manifest: Manifest | None
    ) -> None:
        """Write the files that describe the whole export (whole, deterministic)."""
        ...


class Parts:
    """A unit's partial files by key, opened on first use, discarded together on abort."""

    def __init__(self, dest: Destination) -> None:
        self.dest = dest
        self.files: dict[PurePosixPath, PartialFile] = {}

    def get(self, key: PurePosixPath) -> PartialFile:
        part = self.files.get(key)
        if part is None:
            part = self.files[key] = self.dest.open(key)
        return part

    def in_order(self, last: PurePosixPath | None = None) -> list[PartialFile]:
        """Every file in key order, ``last`` (the one whose presence says most) last."""
        keys = sorted(k for k in self.files if k != last)
        return [self.files[k] for k in keys] + ([self.files[last]] if last in self.files else [])

    def abort(self) -> None:
        for part in self.files.values():
            self.dest.discard(part)
        self.files.clear()

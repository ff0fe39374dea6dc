"""``tartok-tui export``: committed tokens into training formats (see export/run.py)."""

import enum


class ExportFormatName(enum.StrEnum):
    """The export formats (``--format``); export/run.py maps each to its writer."""

    HF = "hf"
    MEMMAP = "memmap"
    SPARK_TTS = "spark-tts"


class SplitBy(enum.StrEnum):
    """``--split-by`` values."""

    LANGUAGE = "language"


FORMAT_NAMES = tuple(str(f) for f in ExportFormatName)
SPLITS: dict[str, tuple[str, ...]] = {SplitBy.LANGUAGE: (ExportFormatName.HF,)}
"""Each --split-by value, and the formats that take it."""

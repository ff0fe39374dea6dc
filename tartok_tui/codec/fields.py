"""The token fields a record carries: one declaration, read by the writers, exports and decode.

Plain Python (no torch), so that anything above the codec can name the fields without
loading a model. Until codecs are a seam of their own, this is BiCodec's declaration.
"""

from __future__ import annotations

from dataclasses import dataclass

CODEC = "bicodec"
SAMPLE_RATE = 16000
"""Audio samples per second the codec reads and writes."""
FRAME_RATE = 50
"""Frame-rate tokens per second of audio."""


@dataclass(frozen=True)
class TokenField:
    name: str
    """The record's field and the Parquet column: ``semantic_tokens``."""
    stream: str
    """A short name for file names and prompt tags: ``semantic``."""
    codes: int
    """Tokens are integers in [0, codes) (uint16 holds them)."""
    per_clip: int | None
    """A fixed count per clip; None: one token per frame (FRAME_RATE per second)."""


GLOBAL = TokenField("global_tokens", "global", 4096, per_clip=32)
SEMANTIC = TokenField("semantic_tokens", "semantic", 8192, per_clip=None)
TOKEN_FIELDS = (GLOBAL, SEMANTIC)
"""In the order a record carries them."""
TOKEN_FIELD_NAMES = tuple(f.name for f in TOKEN_FIELDS)

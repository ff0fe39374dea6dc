"""What the tar reader yields: samples, then at most one TarDamage or Ungrouped, always last."""

from __future__ import annotations

from dataclasses import dataclass


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
class Ungrouped:
    """The tar's members are not grouped by sample: streaming stopped here (last item).

    ``key`` reappeared at ``member`` after other samples' members; nothing of that second
    run was yielded. The samples yielded so far may be incomplete: discard them and read the
    tar again with ``iter_samples(..., indexed=True)``.
    """

    after_index: int
    """How many samples were yielded before it."""
    key: str
    member: str

    @property
    def reason(self) -> str:
        return f"members are not grouped by sample: {self.key!r} reappears at {self.member!r}"

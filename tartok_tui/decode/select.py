"""Which samples ``decode`` turns into audio: named keys, or a seeded random draw.

Both read only what they need: the keys of the tokens files (not their token lists) to
find the samples, then the records of the files that hold them.

A draw picks ``count`` tokens files with replacement, each in proportion to its size in
bytes, then that many distinct samples uniformly within each drawn file: it reads only the
drawn files, whatever the output's size (a sample's chance follows its file's share of the
bytes, not exactly 1 in the output's count). The same output, count and seed give the same
samples.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence

from tartok_tui.output.committed import TokensFile
from tartok_tui.output.read import read_keys
from tartok_tui.output.samples import Sample, read_samples
from tartok_tui.storage import Access

Picks = dict[int, set[str]]
"""Index of a tokens file -> the keys to decode from it."""


def pick_keys(
    files: Sequence[TokensFile], keys: Sequence[str], access: Access | None = None
) -> tuple[Picks, list[str]]:
    """(where each key is, the keys found nowhere); files are read until all are found."""
    wanted = dict.fromkeys(keys)
    picks: Picks = {}
    for i, file in enumerate(files):
        if not wanted:
            break
        found = {k for k in read_keys(file.location, access).keys if k in wanted}
        if found:
            picks[i] = found
            for key in found:
                del wanted[key]
    return picks, list(wanted)


def pick_random(
    files: Sequence[TokensFile], count: int, seed: int, access: Access | None = None
) -> Picks:
    """A seeded draw of about ``count`` samples (see the module doc)."""
    if not files or count < 1:
        return {}
    rng = random.Random(seed)
    weights = [max(1, f.size) for f in files]
    draws = Counter(rng.choices(range(len(files)), weights=weights, k=count))
    picks: Picks = {}
    for i in sorted(draws):
        keys = read_keys(files[i].location, access).keys
        chosen = rng.sample(keys, min(draws[i], len(keys)))
        if chosen:
            picks[i] = set(chosen)
    return picks


def picked_samples(
    files: Sequence[TokensFile], picks: Picks, access: Access | None = None
) -> Iterator[Sample]:
    """The picked samples, in file order (each key once)."""
    for i in sorted(picks):
        left = set(picks[i])
        for sample in read_samples(files[i], access):
            if sample.key in left:
                left.discard(sample.key)
                yield sample
                if not left:
                    break

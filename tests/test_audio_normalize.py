"""The volume normalisation gives bit-identical float64 results to the official full-sort code."""

from __future__ import annotations

import numpy as np
import pytest

from tartok_tui.audio import normalize_volume


def official_normalize(audio: np.ndarray, coeff: float = 0.2) -> np.ndarray:
    """The official implementation, step for step (the oracle)."""
    temp = np.sort(np.abs(audio))
    if temp[-1] < 0.1:
        scaling_factor = max(temp[-1], 1e-3)
        audio = audio / scaling_factor * 0.1
    temp = temp[temp > 0.01]
    length = temp.shape[0]
    if length <= 10:
        return audio
    volume = np.mean(temp[int(0.9 * length) : int(0.99 * length)])
    audio = audio * np.clip(coeff / volume, a_min=0.1, a_max=10)
    max_value = np.max(np.abs(audio))
    if max_value > 1:
        audio = audio / max_value
    return audio


def random_inputs(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = []
    for _ in range(40):
        n = int(rng.choice([1, 5, 11, 12, 50, 111, 112, 1000, 16000, 160_001]))
        scale = float(rng.choice([1e-4, 0.005, 0.02, 0.09, 0.3, 1.0, 3.0, 50.0]))
        kind = rng.integers(4)
        if kind == 0:
            x = rng.standard_normal(n) * scale
        elif kind == 1:
            x = rng.uniform(-scale, scale, n)
        elif kind == 2:  # quantised: many exact ties, as in 8/16-bit audio
            x = np.round(rng.standard_normal(n) * scale * 256) / 256
        else:  # sparse loud samples in near-silence
            x = rng.standard_normal(n) * 1e-3
            x[rng.integers(0, n, max(1, n // 50))] = rng.uniform(-scale, scale, max(1, n // 50))
        inputs.append(x)
    return inputs


EDGE_CASES = {
    "zeros": np.zeros(16000),
    "one_sample": np.array([0.5]),
    "ten_loud": np.r_[np.full(10, 0.5), np.zeros(100)],
    "eleven_loud": np.r_[np.full(11, 0.5), np.zeros(100)],
    "all_equal": np.full(5000, 0.25),
    "at_threshold": np.r_[np.full(500, 0.01), np.full(500, 0.0100000001), np.zeros(10)],
    "negative_zero": np.r_[np.full(100, -0.0), np.linspace(-0.5, 0.5, 101)],
    "peak_just_under_a_tenth": np.linspace(-0.0999999, 0.0999999, 3001),
    "tiny_peak": np.full(2000, 1e-5),
    "clipping": np.r_[np.full(1000, 0.02), np.full(20, 5.0)],
    "ramp": np.linspace(-1.0, 1.0, 48001),
    "alternating": np.tile([0.3, -0.3, 0.02, -0.7], 4000),
}


@pytest.mark.parametrize("seed", range(8))
def test_random_clips_normalise_bit_for_bit(seed: int) -> None:
    for x in random_inputs(seed):
        np.testing.assert_array_equal(normalize_volume(x.copy()), official_normalize(x.copy()))


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_cases_normalise_bit_for_bit(name: str) -> None:
    x = EDGE_CASES[name]
    ours, theirs = normalize_volume(x.copy()), official_normalize(x.copy())
    assert ours.dtype == theirs.dtype == np.float64
    np.testing.assert_array_equal(ours, theirs)


def test_the_input_is_left_untouched() -> None:
    x = np.random.default_rng(1).standard_normal(5000) * 0.2
    kept = x.copy()
    normalize_volume(x)
    np.testing.assert_array_equal(x, kept)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_normalise_like_the_official_code(bad: float) -> None:
    x = np.random.default_rng(2).standard_normal(3000) * 0.3
    x[[5, 700]] = bad
    with np.errstate(invalid="ignore"):
        ours, theirs = normalize_volume(x.copy()), official_normalize(x.copy())
    np.testing.assert_array_equal(ours, theirs)

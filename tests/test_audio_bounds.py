"""No audio input can exhaust memory: long clips are refused from the header or cut off while
decoding, never decoded whole."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from audio_makers import encode_unknown_length, silent_flac, two_tones

from tartok_tui.audio import AudioError, _decode, prepare_audio

TESTS = Path(__file__).parent

# Run in a fresh interpreter so that the peak RSS belongs to these decodes alone.
_PEAK_SCRIPT = r"""
import json, resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from audio_makers import encode_unknown_length, silent_flac, two_tones
from tartok_tui.audio import AudioError, prepare_audio

bombs = {p.stem: p.read_bytes() for p in sorted(Path(sys.argv[2]).iterdir())}
# Load every library once before the baseline.
prepare_audio(silent_flac(2, 48000, 2), max_seconds=60.0)
prepare_audio(encode_unknown_length(two_tones(2, 48000, 2), 48000, codec="flac"), max_seconds=60.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcome = {}
for name, data in bombs.items():
    try:
        prepare_audio(data, max_seconds=60.0)
        outcome[name] = "accepted"
    except AudioError as exc:
        outcome[name] = exc.stage + ": " + exc.reason
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcome["peak_growth_mb"] = (after - before) / 1024
print(json.dumps(outcome))
"""


def test_hours_of_audio_are_too_long_without_the_memory_to_decode_them(tmp_path: Path) -> None:
    bombs = {
        "hour_48k_stereo": silent_flac(3600, 48000, 2),
        "ten_hours_8k_mono": silent_flac(36000, 8000, 1),
        "hour_no_length_in_header": silent_flac(3600, 48000, 2, unknown_length=True),
        "hour_mka_via_ffmpeg": encode_unknown_length(
            np.zeros((48000, 2)), 48000, codec="flac", repeat=3600
        ),
    }
    for name, data in bombs.items():
        assert len(data) < 1_000_000, (name, len(data))  # small files: the bomb is the decoded size
        (tmp_path / name).write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(TESTS), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    for name in bombs:
        assert outcome[name].startswith("too_long"), (name, outcome[name])
    assert "header says 3600.0 s" in outcome["hour_48k_stereo"]
    assert "header says 36000.0 s" in outcome["ten_hours_8k_mono"]
    # Without a length in the header, decoding stops one decoder frame past the limit.
    assert re.search(r"decoding stopped at 60\.\d s", outcome["hour_no_length_in_header"])
    assert re.search(r"decoding stopped at 60\.\d s", outcome["hour_mka_via_ffmpeg"])
    # Decoded whole, the hour of 48 kHz stereo alone is 2.6 GB of float64 (and ten hours at
    # 8 kHz 2.3 GB); a minute of its first channel is 23 MB.
    assert outcome["peak_growth_mb"] < 200, outcome


def test_a_clip_with_no_length_in_its_header_decodes_whole_under_the_limit() -> None:
    known = silent_flac(3, 16000, 2)
    unknown = silent_flac(3, 16000, 2, unknown_length=True)
    a, sr_a = _decode(known, max_seconds=60.0)
    b, sr_b = _decode(unknown, max_seconds=60.0)
    assert sr_a == sr_b == 16000 and len(b) == 48000
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("seconds", "limit", "ok"), [(3.0, 3.0, True), (3.0, 2.999, False)])
def test_the_limit_is_inclusive(seconds: float, limit: float, ok: bool) -> None:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, two_tones(seconds, 16000, 1), 16000, format="WAV")
    if ok:
        assert prepare_audio(buf.getvalue(), max_seconds=limit).shape == (48000,)
    else:
        with pytest.raises(AudioError, match="too_long"):
            prepare_audio(buf.getvalue(), max_seconds=limit)


def test_an_absurd_sample_rate_is_refused_before_decoding() -> None:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(1000), 16000, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    data[24:28] = (1_000_000_000).to_bytes(4, "little")  # the fmt chunk's sample rate
    with pytest.raises(AudioError) as err:
        prepare_audio(bytes(data), max_seconds=60.0)
    assert err.value.stage == "decode" and "sample rate" in err.value.reason

"""Model dir resolution: local paths, and repo ids served from the local Hub cache offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from tartok_tui.hub import ModelSourceError, looks_like_repo_id, resolve_model_dir

REPO = "SparkAudio/Spark-TTS-0.5B"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _seed_cache(cache: Path) -> Path:
    """Lay out a Hub cache entry for REPO as huggingface_hub writes it."""
    repo_dir = cache / ("models--" + REPO.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(REVISION)
    snapshot = repo_dir / "snapshots" / REVISION
    for rel in ("config.yaml", "BiCodec/config.yaml", "wav2vec2-large-xlsr-53/config.json"):
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).write_text(f"# {rel}\n")
    return snapshot


def test_an_existing_directory_is_used_as_is(tmp_path: Path) -> None:
    assert resolve_model_dir(str(tmp_path)) == tmp_path.resolve()


def test_a_repo_id_is_found_in_the_local_cache_when_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = _seed_cache(tmp_path / "cache")
    resolved = resolve_model_dir(REPO, cache_dir=tmp_path / "cache")
    assert resolved == snapshot
    assert (resolved / "BiCodec" / "config.yaml").is_file()


def test_offline_without_a_cached_copy_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match="HF_HUB_OFFLINE is set") as info:
        resolve_model_dir(REPO, cache_dir=tmp_path / "empty")
    assert "--model-dir" in str(info.value)
    # The command to run elsewhere is the current CLI's (huggingface-cli is deprecated).
    assert f"hf download {REPO} --include" in str(info.value)
    assert "huggingface-cli" not in str(info.value)


def test_a_missing_path_that_is_no_repo_id_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_model_dir(str(tmp_path / "nope" / "deeper"))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (REPO, True),
        ("owner/name-1.5", True),
        ("./models/x", False),
        ("/abs/path", False),
        ("a/b/c", False),
        ("plain", False),
    ],
)
def test_repo_id_shape(spec: str, expected: bool) -> None:
    assert looks_like_repo_id(spec) is expected

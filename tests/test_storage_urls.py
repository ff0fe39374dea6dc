"""URLs stay URLs, secrets stay out of messages, a missing backend names its extra."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tartok_tui.shards.discover import InputError, discover_shards
from tartok_tui.storage import (
    BackendMissing,
    StorageError,
    filesystem,
    is_url,
    join,
    redact_text,
    redact_url,
    scheme,
)


@pytest.mark.parametrize(
    ("location", "url"),
    [
        ("s3://bucket/key.tar", True),
        ("gs://bucket/dir/", True),
        ("hf://datasets/amphion/Emilia-Dataset/Emilia/EN", True),
        ("file:///data/x.tar", True),
        ("/data/x.tar", False),
        ("relative/x.tar", False),
        ("s3:/collapsed/by/pathlib", False),
        (Path("/data/s3://x"), False),
    ],
)
def test_urls_are_told_from_paths(location: str | Path, url: bool) -> None:
    assert is_url(location) is url


def test_a_path_collapses_a_url_so_urls_stay_strings() -> None:
    assert str(Path("s3://b/k")) == "s3:/b/k" and not is_url(str(Path("s3://b/k")))
    assert join("s3://b/prefix/", "sub", "x.tar") == "s3://b/prefix/sub/x.tar"
    assert join(Path("/in"), "sub", "x.tar") == Path("/in/sub/x.tar")
    assert scheme("S3://b/k") == "s3"


def test_secrets_are_redacted_from_urls_options_and_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-value-123")
    monkeypatch.setenv("HF_TOKEN", "hf_" + "a" * 30)
    options = {
        "key": "AKIAEXAMPLEKEY",
        "secret": "opt-secret-value-456",
        "endpoint_url": "http://127.0.0.1:9000",
        "client_kwargs": {"aws_session_token": "session-token-789"},
        "profile": "lab",
    }
    text = (
        "failed with opt-secret-value-456 and env-secret-value-123 and session-token-789, "
        f"token hf_{'a' * 30}, url https://b.s3/k?X-Amz-Signature=abcdef&X-Amz-Credential=xyz"
    )
    cleaned = redact_text(text, options)
    for secret in ("opt-secret", "env-secret", "session-token", "hf_aaa", "abcdef", "xyz"):
        assert secret not in cleaned
    assert redact_url("s3://user:pass@bucket/k?sig=1") == "s3://***@bucket/k?***"
    assert redact_url("s3://bucket/k") == "s3://bucket/k"


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_a_url_whose_backend_is_missing_names_the_extra() -> None:
    with pytest.raises(BackendMissing, match=r"gcsfs.*pip install 'tartok-tui\[gcs\]'"):
        filesystem("gs://bucket/dir")
    with pytest.raises(InputError, match=r"tartok-tui\[gcs\]"):
        discover_shards("gs://bucket/dir")


def test_an_unknown_scheme_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="unknown URL scheme nope://"):
        filesystem("nope://bucket/x")

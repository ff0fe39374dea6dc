"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# --- output fixtures ---------------------------------------------------------------------------


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(input dir, output dir, a tar inside a subdirectory of the input)."""
    inp, out = tmp_path / "in", tmp_path / "out"
    (inp / "sub").mkdir(parents=True)
    tar = inp / "sub" / "X.tar"
    tar.write_bytes(b"")
    return inp, out, tar


# --- object storage ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    """A real S3 server on 127.0.0.1 (see s3_support), one per test module."""
    from s3_support import serving

    yield from serving()


# --- tokenizer engine fixtures (codec) ---------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight model dir in the official layout (loads + tokenizes in < 1 s)."""
    from tartok_tui.codec.random_model import write_random_model

    return write_random_model(tmp_path_factory.mktemp("tiny-model"), "tiny", seed=0)


@pytest.fixture(scope="session")
def reference_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight model dir built with the reference package's own classes."""
    from codec_support import write_reference_model

    return write_reference_model(tmp_path_factory.mktemp("reference-model"), seed=1)


@pytest.fixture
def model_dir(tiny_model_dir: Path) -> Path:
    """The session's tiny random-weight model, under the name the run tests use."""
    return tiny_model_dir

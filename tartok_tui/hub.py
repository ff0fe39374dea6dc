"""Model directories from a local path or a Hugging Face repo id.

Only the tokenizer's files are fetched (``config.yaml``, ``BiCodec/``,
``wav2vec2-large-xlsr-53/``); the LLM half of Spark-TTS is never downloaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

TOKENIZER_PATTERNS = ("config.yaml", "BiCodec/*", "wav2vec2-large-xlsr-53/*")
DEFAULT_REPO = "SparkAudio/Spark-TTS-0.5B"

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelSourceError(Exception):
    """The model could be neither found locally nor downloaded."""


def looks_like_repo_id(spec: str) -> bool:
    return bool(_REPO_ID.match(spec)) and not spec.startswith((".", "/", "~"))


def resolve_model_dir(spec: str | os.PathLike[str], cache_dir: Path | None = None) -> Path:
    """Return a local model directory for ``spec``.

    An existing directory is used as it is. Otherwise ``spec`` must be a repo id
    (``owner/name``); its tokenizer files are fetched into the Hugging Face
    cache (or found there when offline, ``HF_HUB_OFFLINE=1``).
    """
    text = os.fspath(spec)
    local = Path(text).expanduser()
    if local.is_dir():
        return local.resolve()
    if not looks_like_repo_id(text):
        raise ModelSourceError(
            f"model dir {text!r} does not exist and is not a Hugging Face repo id"
        )
    return _download(text, cache_dir)


def _download(repo_id: str, cache_dir: Path | None) -> Path:
    # Imported here: a local model dir (the common case on clusters) never pays for it.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    try:
        path = snapshot_download(
            repo_id,
            allow_patterns=list(TOKENIZER_PATTERNS),
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            local_files_only=offline,
        )
    except LocalEntryNotFoundError as exc:
        how = (
            "HF_HUB_OFFLINE is set and it is not in the local cache"
            if offline
            else "it is not in the local cache and the Hub could not be reached"
        )
        raise ModelSourceError(
            f"cannot get {repo_id!r}: {how}. Download it on a machine with internet access "
            f"(hf download {repo_id} --include 'config.yaml' 'BiCodec/*' "
            f"'wav2vec2-large-xlsr-53/*' --local-dir DIR) and pass --model-dir DIR."
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelSourceError(f"cannot download {repo_id!r}: {exc}") from exc
    return Path(path)

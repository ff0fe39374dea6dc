"""A model dir's content fingerprint: the SHA-256 of every file the tokenizer loads.

Two model dirs with the same architecture and other weights give other tokens; an output
must never take both (``output.manifest``). Hashing the ~1.3 GB of the real model takes a
few seconds, so each file's digest is cached by its real path, size and modification time
(in ``$XDG_CACHE_HOME/tartok-tui/file-digests.json``): a worker that starts again, or a
run resumed on the same machine, reads the cache instead of the weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tartok_tui.codec.model_dir import BICODEC_DIR, WAV2VEC2_DIR, read_config, wav2vec2_weights

log = logging.getLogger(__name__)

CACHE_NAME = "file-digests.json"
CHUNK = 8 << 20


@dataclass(frozen=True)
class WeightsFingerprint:
    digest: str
    """SHA-256 over the files' names and digests, in a fixed order."""
    files: dict[str, str]
    """Each loaded file (relative to the model dir) -> its SHA-256."""


def model_files(root: Path) -> list[Path]:
    """The files the tokenizer reads from a model dir in the official layout."""
    cfg = read_config(root)
    return [
        root / "config.yaml",
        root / BICODEC_DIR / "config.yaml",
        root / BICODEC_DIR / "model.safetensors",
        root / WAV2VEC2_DIR / "config.json",
        root / WAV2VEC2_DIR / "preprocessor_config.json",
        wav2vec2_weights(cfg),
    ]


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tartok-tui" / CACHE_NAME


def _load_cache(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the file digest cache %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _save_cache(path: Path, cache: dict[str, dict]) -> None:
    """Best effort: without a writable cache the digests are computed again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".digests-")
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not write the file digest cache %s: %s", path, exc)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def weights_fingerprint(root: Path | str, *, cache: Path | None = None) -> WeightsFingerprint:
    """The fingerprint of the model dir ``root`` (ModelDirError if it is not one)."""
    root = Path(root)
    cache_file = cache if cache is not None else cache_path()
    known = _load_cache(cache_file)
    changed = False
    files: dict[str, str] = {}
    for path in model_files(root):
        real = os.path.realpath(path)
        st = os.stat(real)
        entry = known.get(real)
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            digest = str(entry["sha256"])
        else:
            digest = file_digest(Path(real))
            known[real] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
            changed = True
        files[path.relative_to(root).as_posix()] = digest
    if changed:
        _save_cache(cache_file, known)
    overall = hashlib.sha256(
        "".join(f"{name}\0{digest}\n" for name, digest in sorted(files.items())).encode()
    ).hexdigest()
    return WeightsFingerprint(overall, files)

"""The run manifest: which codec, weights, precision and options make an output's tokens.

``OUTPUT/manifest.json`` is written before the first tar is committed. Its
``fingerprint`` covers what changes tokens — the codec and its token version, the content
of the weight files loaded, the precision, and the options that pick the audio — and every
tar's commit record (``output.tarmeta``; Parquet files also in their metadata) carries it.
A run whose fingerprint differs from its output's is refused before any worker starts,
so one output never mixes two models' tokens. What does not change tokens (the device, the
tool's version, batch sizes, limits) is recorded for people to read, outside the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tartok_tui import __version__
from tartok_tui.storage import Access, Location, is_url

MANIFEST_NAME = "manifest.json"
VERSION = 1
CODEC = "bicodec"
TOKENS_VERSION = 1
"""Bumped when this tool's code would give other tokens for the same input and weights."""
FINGERPRINT_FIELDS = ("codec", "tokens_version", "weights", "precision", "token_options")
"""The fields the fingerprint covers, in order."""


@dataclass(frozen=True)
class Manifest:
    codec: str
    tokens_version: int
    weights: str
    """The weights fingerprint (codec.fingerprint)."""
    precision: str
    token_options: dict[str, Any]
    """Options that change which audio is tokenized or how."""
    weight_files: dict[str, str] = field(default_factory=dict)
    tool_version: str = __version__
    created: str = ""
    host: str = ""
    version: int = VERSION

    @property
    def fingerprint(self) -> str:
        covered = {name: getattr(self, name) for name in FINGERPRINT_FIELDS}
        text = json.dumps(covered, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def differences(self, other: Manifest) -> list[str]:
        """What ``other`` (this run) changes against this manifest (the output's), in words."""
        out = []
        for name in FINGERPRINT_FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine == theirs:
                continue
            if name == "weights":
                files = sorted(
                    f
                    for f in set(self.weight_files) | set(other.weight_files)
                    if self.weight_files.get(f) != other.weight_files.get(f)
                )
                detail = f" (files that differ: {', '.join(files)})" if files else ""
                out.append(f"model weights: {mine[:12]} in the output, {theirs[:12]} now{detail}")
            else:
                label = name.replace("_", " ")
                out.append(f"{label}: {_show(mine)} in the output, {_show(theirs)} now")
        return out

    def to_bytes(self) -> bytes:
        fields = asdict(self)
        del fields["version"]
        data = {"version": self.version, "fingerprint": self.fingerprint, **fields}
        return (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Raises ValueError when ``data`` is not a manifest this version reads."""
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict):
                raise ValueError("not an object")
            if int(raw.get("version", 0)) > VERSION:
                raise ValueError(f"version {raw['version']} is newer than this tool's ({VERSION})")
            manifest = cls(
                codec=str(raw["codec"]),
                tokens_version=int(raw["tokens_version"]),
                weights=str(raw["weights"]),
                precision=str(raw["precision"]),
                token_options=dict(raw["token_options"]),
                weight_files=dict(raw.get("weight_files", {})),
                tool_version=str(raw.get("tool_version", "")),
                created=str(raw.get("created", "")),
                host=str(raw.get("host", "")),
                version=int(raw["version"]),
            )
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a run manifest: {exc}") from None
        recorded = raw.get("fingerprint")
        if recorded is not None and recorded != manifest.fingerprint:
            raise ValueError(
                f"run manifest fingerprint {recorded} does not match its own fields "
                f"({manifest.fingerprint}): the file was edited"
            )
        return manifest


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def build_manifest(model_dir: Path, precision: str, audio_exts: tuple[str, ...]) -> Manifest:
    """This run's manifest: hashes the model's files (cached, see codec.fingerprint)."""
    from tartok_tui.codec.fingerprint import weights_fingerprint

    weights = weights_fingerprint(model_dir)
    return Manifest(
        codec=CODEC,
        tokens_version=TOKENS_VERSION,
        weights=weights.digest,
        precision=precision,
        token_options={"audio_exts": list(audio_exts)},
        weight_files=weights.files,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        host=socket.gethostname(),
    )


def read_manifest(output_dir: Location, access: Access | None = None) -> Manifest | None:
    """The output's manifest, None when it has none; ValueError when it is unreadable."""
    data = _read(output_dir, access)
    return None if data is None else Manifest.from_bytes(data)


def _read(output_dir: Location, access: Access | None) -> bytes | None:
    if is_url(output_dir):
        from tartok_tui.output.store import StoreOutput

        store = StoreOutput(str(output_dir), access)
        if not store.exists(MANIFEST_NAME):
            return None
        return store.read_bytes(MANIFEST_NAME)
    try:
        return (Path(output_dir) / MANIFEST_NAME).read_bytes()
    except FileNotFoundError:
        return None


def write_manifest(output_dir: Location, manifest: Manifest, access: Access | None = None) -> None:
    """Publish the manifest whole: an atomic rename locally, one upload on a store."""
    data = manifest.to_bytes()
    if is_url(output_dir):
        from tartok_tui.output.store import StoreOutput

        StoreOutput(str(output_dir), access).put_bytes(MANIFEST_NAME, data)
        return
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".manifest-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / MANIFEST_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

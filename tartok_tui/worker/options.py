"""A worker's options: derived from the run's ``RunConfig`` plus its slot's placement.

The supervisor builds them (``for_slot``) and hands them to the worker as one JSON
argument, so no option is spelled a second time in an argument parser of the worker.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tartok_tui.config import RunConfig
from tartok_tui.storage.urls import as_location


@dataclass(frozen=True)
class WorkerOptions:
    slot: int
    device: str
    """As the worker sees it: "cpu" or "cuda:0" (its only visible GPU)."""
    model_dir: Path
    """A local directory (a Hub repo id is resolved by the supervisor first)."""
    threads: int
    """Torch intra-op threads."""
    output_dir: Path | str
    """A local Path, or a URL string (never a Path: it would collapse the ``//``)."""
    input_dir: Path | str
    precision: str = "fp32"
    decode_workers: int = 0
    """Decode threads; 0: chosen from ``threads``."""
    streams: int = 0
    """Batches run at once; 0: the tokenizer's default (one per thread on the CPU)."""
    batch_seconds: float = 240.0
    max_duration: float = 60.0
    audio_exts: tuple[str, ...] = ("wav", "flac", "mp3", "ogg", "opus", "m4a")
    max_json_mib: float = 64.0
    max_audio_mib: float = 2048.0
    output_format: str = "jsonl"
    storage_options: dict[str, Any] = field(default_factory=dict)
    output_spool: str = ""
    """The local folder where an output URL's files are built before upload ("" for a
    local output)."""
    spool_dir: str = ""
    """--spool-dir as given ("" for the default): where a compressed tar read by key is
    decompressed first."""
    fingerprint: str = ""
    """The run manifest's fingerprint, recorded with every committed tar ("": none)."""
    gpu_sharers: int = 1
    """Workers that may share this worker's GPU (itself included): above 1, each caps its
    memory to a fair share (worker.gpu_share)."""

    @classmethod
    def for_slot(
        cls,
        config: RunConfig,
        *,
        slot: int,
        device: str,
        threads: int,
        model_dir: Path,
        fingerprint: str = "",
        gpu_sharers: int = 1,
    ) -> WorkerOptions:
        """Every field named like a RunConfig field takes the config's value (None -> 0)."""
        given: dict[str, Any] = {
            "slot": slot,
            "device": device,
            "threads": threads,
            "model_dir": Path(model_dir),
            "fingerprint": fingerprint,
            "gpu_sharers": gpu_sharers,
            "output_spool": str(config.spool_path) if config.output_is_url else "",
            "spool_dir": str(config.spool_dir) if config.spool_dir is not None else "",
        }
        config_values = {f.name: getattr(config, f.name) for f in fields(config)}
        for f in fields(cls):
            if f.name in given or f.name not in config_values:
                continue
            value = config_values[f.name]
            given[f.name] = 0 if value is None else value
        return cls(**given)

    def to_json(self) -> str:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value)
            elif isinstance(value, tuple):
                data[key] = list(value)
        return json.dumps(data, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WorkerOptions:
        data = json.loads(text)
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"unknown worker options {sorted(unknown)}")
        for key, value in data.items():
            if key == "model_dir":
                data[key] = Path(value)
            elif key in ("output_dir", "input_dir"):
                data[key] = as_location(value)
            elif isinstance(value, list):
                data[key] = tuple(value)
        return cls(**data)

    @property
    def local_output_dir(self) -> Path:
        """Where partial files live: the output directory, or the spool folder of an
        output URL."""
        if self.output_spool:
            return Path(self.output_spool)
        return Path(self.output_dir)

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def resolved_decode_workers(self) -> int:
        """Decode threads: ``decode_workers`` if set, else chosen from the worker's cores.

        On a GPU worker decoding is the main CPU work: the model runs on the device and
        the lease thread mostly waits, so every core the worker is given decodes (one
        thread per core; decode + soxr VHQ + normalisation is ~1,000x real time per core,
        and a GPU in bf16 can take several thousand x). On the CPU the model needs the
        cores (~10x real time against decoding's 1,000x): a couple of threads keep it fed.
        """
        if self.decode_workers > 0:
            return self.decode_workers
        if self.on_gpu:
            return max(1, self.threads)
        return max(1, min(4, self.threads // 2))

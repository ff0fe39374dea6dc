"""Run configuration: every option of ``tartok-tui run`` in one place."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_AUDIO_EXTS: tuple[str, ...] = ("wav", "flac", "mp3", "ogg", "opus", "m4a")


class Precision(enum.StrEnum):
    """Model precision: fp32 is exact; bf16/fp16 are faster on GPUs, not bit-identical."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class ConfigError(ValueError):
    """A bad option or argument, found before any worker starts (the CLI exits 2)."""


@dataclass
class RunConfig:
    input_dir: Path
    output_dir: Path
    model_dir: str
    """A local model directory in the official layout, or a Hugging Face repo id."""
    from_index: int = 0
    to_index: int | None = None
    """Exclusive; None means up to the last tar."""
    recursive: bool = False
    num_proc: int | None = None
    """None: procs_per_gpu per visible GPU, or 1 without a GPU."""
    procs_per_gpu: int = 2
    device: str = "auto"
    """auto | cpu | cuda | cuda:0,1 (the GPUs to use)."""
    precision: str = "fp32"
    """fp32 | bf16 | fp16."""
    batch_seconds: float = 240.0
    """Audio seconds per model batch on the GPU (padding included)."""
    max_duration: float = 60.0
    """Clips longer than this (seconds) get an error record instead of tokens."""
    audio_exts: tuple[str, ...] = DEFAULT_AUDIO_EXTS
    max_json_mib: float = 64.0
    """A sample's JSON member larger than this gets an error record (read no further)."""
    max_audio_mib: float = 2048.0
    """A sample's audio member larger than this gets an error record (read no further)."""
    output_format: str = "jsonl"
    """jsonl | parquet: one file per input tar in this format."""
    storage_options: dict[str, object] = field(default_factory=dict)
    """Extra fsspec options for URLs (endpoint, profile, ...); never logged."""
    memory_limit_gb: float = 100.0
    memory_check_s: float = 2.0
    """Seconds between checks of the workers' memory against memory_limit_gb."""
    stats_every: int = 1000
    threads_per_worker: int | None = None
    """Torch threads per worker; None: CPU cores shared evenly among CPU workers."""
    decode_workers: int | None = None
    """Decode threads per worker; None: chosen from the cores a worker owns."""
    streams: int | None = None
    """Batches each worker runs at once; None: one per torch thread on the CPU, 1 on a GPU."""
    # restart policy
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    crash_window_s: float = 300.0
    crash_limit: int = 5
    """A slot failing this many times within crash_window_s becomes FATAL."""
    poison_threshold: int = 2
    """A tar that killed this many workers is re-run in isolation, sample by sample."""
    stop_timeout_s: float = 30.0
    """After a stop request, workers still alive after this long are killed."""
    stall_timeout_s: float = 600.0
    """A worker holding a lease with no progress for this long is killed and replaced
    (loading the model gets max(this, 1800) s)."""
    log_dir: Path | None = None
    """Worker logs; default OUTPUT_DIR/logs."""
    worker_env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the workers."""

    @property
    def logs_path(self) -> Path:
        return self.log_dir if self.log_dir is not None else self.output_dir / "logs"

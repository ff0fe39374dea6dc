"""Run configuration: every option of ``tartok-tui run`` declared once.

Each field is the one place an option's name, default and help live. The command line
is built from these declarations (``--kebab-name``, the old ``--snake_name`` spelling,
``TARTOK_<NAME>`` in the environment), and the workers' options are derived from the
same fields (``worker.options.WorkerOptions.for_slot``).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_AUDIO_EXTS: tuple[str, ...] = ("wav", "flac", "mp3", "ogg", "opus", "m4a")


class Precision(enum.StrEnum):
    """Model precision: fp32 is exact; bf16/fp16 are faster on GPUs, not bit-identical."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class OutputFormat(enum.StrEnum):
    JSONL = "jsonl"
    PARQUET = "parquet"


class ConfigError(ValueError):
    """A bad option or argument, found before any worker starts (the CLI exits 2)."""


# ---------------------------------------------------------------- declarations


@dataclass(frozen=True)
class CliSpec:
    """How an option appears on the command line."""

    help: str
    short: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    """Further spellings (the kebab and snake ones are always there)."""
    min: float | None = None
    cli_type: Any = None
    """What the command line takes, when it differs from the field's type."""
    parse: Callable[[Any], Any] | None = None
    """Command-line value -> field value (raises ConfigError)."""
    default_text: str | None = None
    """Shown as the default instead of the value (for None and computed defaults)."""
    required: bool = False


def option(
    default: Any = MISSING,
    *,
    help: str,
    short: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
    min: float | None = None,
    cli_type: Any = None,
    parse: Callable[[Any], Any] | None = None,
    default_text: str | None = None,
    default_factory: Callable[[], Any] | Any = MISSING,
) -> Any:
    """A dataclass field carrying its command-line declaration."""
    spec = CliSpec(
        help=help,
        short=short,
        aliases=aliases,
        min=min,
        cli_type=cli_type,
        parse=parse,
        default_text=default_text,
        required=default is MISSING and default_factory is MISSING,
    )
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={"cli": spec})
    return field(default=default, metadata={"cli": spec})


def parse_exts(value: str | tuple[str, ...]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    exts = tuple(e.strip().lstrip(".").lower() for e in items if e.strip())
    if not exts:
        raise ConfigError("--audio-exts: give at least one extension")
    return exts


def parse_env(pairs: list[str] | dict[str, str] | None) -> dict[str, str]:
    if isinstance(pairs, dict):
        return dict(pairs)
    env: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--worker-env: expected KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def parse_optional_text(value: str | None) -> str | None:
    """An empty value (``TARTOK_X=``) is the same as not giving the option."""
    return value.strip() or None if value is not None else None


def parse_location(value: str | Path) -> Path | str:
    """A command-line location: a URL stays the string given, anything else is a Path."""
    from tartok_tui.storage.urls import as_location

    if isinstance(value, str) and not value.strip():
        raise ConfigError("expected a directory or a URL, got an empty string")
    return as_location(value)


def parse_json_object(value: str | dict[str, Any] | None) -> dict[str, Any]:
    if value is None or isinstance(value, dict):
        return dict(value or {})
    try:
        obj = json.loads(value)
    except json.JSONDecodeError as exc:
        # The value may hold secrets: say where it is wrong, not what it says.
        raise ConfigError(f"--storage-options: not valid JSON ({exc.msg} at {exc.pos})") from exc
    if not isinstance(obj, dict):
        raise ConfigError("--storage-options: expected a JSON object")
    return obj


# ---------------------------------------------------------------- the run


@dataclass
class RunConfig:
    input_dir: Path | str = option(
        help="Directory holding the input .tar shards, or a URL: s3://bucket/prefix, "
        "gs://bucket/prefix, hf://datasets/org/name/path.",
        short=("-i",),
        cli_type=str,
    )
    """A local Path, or a URL kept as a string (``Path`` would collapse its ``//``)."""
    output_dir: Path | str = option(
        help="Where the per-tar output files go (a directory or a URL, like --input-dir); "
        "a rerun resumes here.",
        short=("-o",),
        cli_type=str,
    )
    """A local Path, or a URL kept as a string."""
    model_dir: str = option(
        help="Spark-TTS model: a local directory in the official layout, or a Hugging Face "
        "repo id.",
        short=("-m",),
    )
    from_index: int = option(0, help="First tar (index in the sorted list).", min=0)
    to_index: int | None = option(
        None, help="End of the tar range, exclusive.", min=0, default_text="the last tar"
    )
    recursive: bool = option(False, help="Look for tars in subdirectories too.")
    num_proc: int | None = option(
        None,
        help="Worker processes in all.",
        short=("-n",),
        min=1,
        default_text="procs-per-gpu per GPU, or 1 without a GPU",
    )
    procs_per_gpu: int = option(2, help="Workers per GPU when --num-proc is not given.", min=1)
    device: str = option(
        "auto", help="auto | cpu | cuda | cuda:0,1 (the GPUs to use).", short=("-d",)
    )
    precision: Precision = option(
        Precision.FP32,
        help="Model precision; bf16/fp16 are faster on GPUs but not bit-identical.",
    )
    batch_seconds: float = option(
        240.0, help="Audio seconds per model batch on a GPU, padding included.", min=1.0
    )
    max_duration: float = option(
        60.0, help="Clips longer than this many seconds get an error record.", min=0.1
    )
    audio_exts: tuple[str, ...] = option(
        DEFAULT_AUDIO_EXTS,
        help="Audio member extensions, comma separated, in order of preference.",
        cli_type=str,
        parse=parse_exts,
        default_text=",".join(DEFAULT_AUDIO_EXTS),
    )
    max_json_mib: float = option(
        64.0,
        help="A sample's JSON member larger than this (MiB) gets an error record.",
        min=0.001,
    )
    max_audio_mib: float = option(
        2048.0,
        help="A sample's audio member larger than this (MiB) gets an error record.",
        min=0.001,
    )
    output_format: OutputFormat = option(
        OutputFormat.JSONL, help="One file per input tar: jsonl or parquet."
    )
    storage_options: dict[str, Any] = option(
        help="Extra options for s3://, gs://, hf:// URLs, as a JSON object (never logged).",
        cli_type=str | None,
        parse=parse_json_object,
        default_text="none",
        default_factory=dict,
    )
    memory_limit_gb: float = option(
        100.0,
        help="Total worker memory (GiB) before workers are cleaned up, then recycled.",
        min=0.1,
    )
    memory_check_s: float = option(2.0, help="Seconds between memory checks.", min=0.1)
    stats_every: int = option(
        1000, help="Log total requests, total and average time every N samples.", min=1
    )
    threads_per_worker: int | None = option(
        None,
        help="Torch threads per worker.",
        min=1,
        default_text="CPU cores shared among CPU workers",
    )
    decode_workers: int | None = option(
        None,
        help="Audio decode threads per worker.",
        min=1,
        default_text="from the worker's cores",
    )
    streams: int | None = option(
        None,
        help="Batches each worker runs at once, sharing its threads.",
        min=1,
        default_text="one per thread on the CPU, 1 on a GPU",
    )
    backoff_initial_s: float = option(1.0, help="First restart delay after a worker dies.", min=0)
    backoff_max_s: float = option(60.0, help="Longest restart delay.", min=0)
    crash_window_s: float = option(
        300.0, help="Window (s) in which --crash-limit failures make a slot fatal.", min=0
    )
    crash_limit: int = option(
        5, help="Failures within --crash-window-s before a slot gives up.", min=1
    )
    poison_threshold: int = option(
        2, help="A tar that killed this many workers is re-run sample by sample.", min=1
    )
    stop_timeout_s: float = option(
        30.0, help="After a stop request, workers still alive this long are killed.", min=0
    )
    stall_timeout_s: float = option(
        600.0,
        help="A worker with no progress on its tar for this long is killed and replaced "
        "(loading the model gets max(this, 1800) s).",
        min=1,
    )
    ray_address: str | None = option(
        None,
        help="Run the workers on a Ray cluster: HOST:PORT of its head, or auto for the "
        "cluster this machine belongs to (needs pip install 'tartok-tui[ray]').",
        parse=parse_optional_text,
        default_text="no cluster: workers on this machine",
    )
    take_over: bool = option(
        False,
        help="Take the output's claim from another run writing the same tars (it stops at "
        "its next heartbeat). A run that is gone is taken over without this.",
    )
    spool_dir: Path | None = option(
        None,
        help="Local folder where output files are built before their upload when "
        "--output-dir is a URL (a tar's files at a time per worker; with hf://, also the "
        "tars waiting for the next Hub commit).",
        default_text="the system temp dir's tartok-tui-spool-<uid>",
    )
    hub_commit_tars: int = option(
        32,
        help="With an hf:// output: commit the files of this many tars in one Hub commit "
        "(a tar is done when its commit lands).",
        min=1,
    )
    hub_commit_every_s: float = option(
        300.0,
        help="With an hf:// output: commit what is staged once its oldest tar has waited "
        "this long, even if fewer tars.",
        min=1,
    )
    log_dir: Path | None = option(
        None,
        help="Worker logs.",
        default_text="OUTPUT_DIR/logs; for an output URL, logs/ in its spool folder",
    )
    worker_env: dict[str, str] = option(
        help="Extra environment for the workers, KEY=VALUE; repeatable.",
        aliases=("--extra-worker-env", "--extra_worker_env"),
        cli_type=list[str] | None,
        parse=parse_env,
        default_text="none",
        default_factory=dict,
    )

    def __post_init__(self) -> None:
        # Paths given as strings become Paths; URLs stay strings (see storage.urls).
        self.input_dir = parse_location(self.input_dir)
        self.output_dir = parse_location(self.output_dir)

    @property
    def output_is_url(self) -> bool:
        return isinstance(self.output_dir, str)

    @property
    def spool_path(self) -> Path:
        """This output's spool folder (used when the output is a URL; see output.spool)."""
        from tartok_tui.storage.spool import spool_root

        return spool_root(self.spool_dir, str(self.output_dir))

    @property
    def local_output_dir(self) -> Path:
        """Where partial files and isolation journals live: the output directory itself,
        or the spool folder of an output URL."""
        if isinstance(self.output_dir, str):
            return self.spool_path
        return self.output_dir

    @property
    def logs_path(self) -> Path:
        if self.log_dir is not None:
            return self.log_dir
        return self.local_output_dir / "logs"

    def worker_log_path(self, slot: int) -> Path:
        """The log file of a worker slot (every process the slot starts appends to it)."""
        return self.logs_path / f"worker-{slot}.log"


@dataclass
class DisplayOptions:
    """How a run is shown (not part of the run itself)."""

    no_tui: bool = option(
        False, help="Plain progress output instead of the dashboard (never loads textual)."
    )
    progress_interval: float | None = option(
        None,
        help="Seconds between --no-tui progress lines.",
        min=0.1,
        default_text="0.5 on a terminal, 30 otherwise",
    )

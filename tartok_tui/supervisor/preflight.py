"""Everything checked before any worker starts: options, tars, output, model dir, placement.

A failure raises ``ConfigError`` (the CLI exits 2). Runs without torch: model checks
that need it happen in a short-lived subprocess.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from tartok_tui.config import ConfigError, Precision, RunConfig
from tartok_tui.output.paths import RESERVED_TOP_DIRS, tar_output_paths
from tartok_tui.supervisor.placement import Placement, plan_slots


@dataclass(frozen=True)
class ValidatedRun:
    tars: list[Path]
    model_dir: Path
    placements: list[Placement]
    ignored: tuple[str, ...] = ()
    """Shard-like files of the input that are not read (named in the run's first lines)."""


def check_options(config: RunConfig) -> None:
    """The options' own ranges and choices (no I/O)."""
    if config.precision not in {p.value for p in Precision}:
        raise ConfigError(
            f"--precision {config.precision!r}: expected one of "
            + ", ".join(p.value for p in Precision)
        )
    for name in (
        "batch_seconds",
        "max_duration",
        "memory_limit_gb",
        "stop_timeout_s",
        "stall_timeout_s",
        "max_json_mib",
        "max_audio_mib",
    ):
        if getattr(config, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    if config.stats_every < 1 or config.crash_limit < 1 or config.poison_threshold < 1:
        raise ConfigError("--stats-every, --crash-limit and --poison-threshold must be at least 1")
    if config.from_index < 0 or (
        config.to_index is not None and config.to_index <= config.from_index
    ):
        raise ConfigError(f"bad tar range [{config.from_index}, {config.to_index})")


def find_tars(config: RunConfig) -> tuple[list[Path], tuple[str, ...]]:
    """The tars in the run's range, and the shard-like files that are not read."""
    from tartok_tui.shards.discover import InputError, discover_shards

    if not config.input_dir.is_dir():
        raise ConfigError(f"input directory does not exist: {config.input_dir}")
    try:
        found = discover_shards(
            config.input_dir,
            config.from_index,
            config.to_index,
            config.recursive,
            reserved_top_dirs=RESERVED_TOP_DIRS,
        )
    except InputError as exc:
        raise ConfigError(str(exc)) from exc
    tars = [Path(t) for t in found.tars]
    if not tars:
        raise ConfigError(
            f"no tars in {config.input_dir} for range [{config.from_index}, "
            f"{config.to_index if config.to_index is not None else 'end'})"
            + ("" if config.recursive else " (subdirectories need --recursive)")
        )
    return tars, tuple(found.ignored)


def check_model(model_dir: str) -> Path:
    """Resolve a local dir or Hub repo id and check its configs and every tensor's name and
    shape (without torch in this process); returns the local dir."""
    from tartok_tui.codec.model_check import check_model_dir
    from tartok_tui.codec.model_dir import ModelDirError
    from tartok_tui.hub import ModelSourceError, resolve_model_dir

    try:
        path = resolve_model_dir(model_dir)
        check_model_dir(path)
    except (ModelSourceError, ModelDirError) as exc:
        raise ConfigError(f"model dir: {exc}") from exc
    return path


def check_writable(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} is not writable: {path} ({exc})") from exc


def validate(config: RunConfig, tars: list[Path] | None = None) -> ValidatedRun:
    """Check every argument before any worker starts; raises ConfigError.

    ``tars``: the tar list an earlier validation found (it is not searched again)."""
    check_options(config)
    ignored: tuple[str, ...] = ()
    if tars is None:
        tars, ignored = find_tars(config)
    elif not config.input_dir.is_dir():
        raise ConfigError(f"input directory does not exist: {config.input_dir}")
    for tar in tars:
        try:
            tar_output_paths(config.output_dir, config.input_dir, tar)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    model_dir = check_model(config.model_dir)
    check_writable(config.output_dir, "output directory")
    check_writable(config.logs_path, "log directory")
    if config.ray_address is not None:
        from tartok_tui.supervisor.ray_cluster import plan_cluster_slots

        placements = plan_cluster_slots(config)
    else:
        placements = plan_slots(config)
    return ValidatedRun(list(tars), model_dir, placements, ignored)

"""Everything checked before any worker starts: options, tars, output, model dir, placement.

A failure raises ``ConfigError`` (the CLI exits 2), or ``OutputRefused`` when an output
URL refuses the write check for a reason no retry mends (exit 4, as when the output fills
up later). Runs without torch: model checks that need it happen in a short-lived
subprocess.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from tartok_tui.config import ConfigError, Precision, RunConfig
from tartok_tui.exit_codes import ExitCode
from tartok_tui.output.manifest import MANIFEST_NAME, Manifest, build_manifest, read_manifest
from tartok_tui.output.paths import LOGS_DIR, RESERVED_TOP_DIRS, tar_output_paths
from tartok_tui.storage import (
    Access,
    Location,
    RetryEvent,
    StorageError,
    as_location,
    filesystem_class,
    is_url,
    redact_location,
    redact_text,
    scheme,
)
from tartok_tui.supervisor.placement import Placement, plan_slots

if TYPE_CHECKING:
    from tartok_tui.output.claim import OutputClaim


class OutputRefused(ConfigError):
    """The output URL refuses the write check: full, over its quota, read-only, access
    denied, bucket missing. Not a bad argument: the run exits as it would if the output
    refused a tar's files later."""

    exit_code = ExitCode.OUTPUT_UNAVAILABLE


Report = Callable[[str], None]
"""Where validation says what it is waiting for (a throttled store's retries)."""


@dataclass(frozen=True)
class ValidatedRun:
    tars: list[Location]
    model_dir: Path
    placements: list[Placement]
    ignored: tuple[str, ...] = ()
    """Shard-like files of the input that are not read (named in the run's first lines)."""
    manifest: Manifest | None = None
    """This run's manifest (what makes its tokens)."""
    output_manifest: Manifest | None = None
    """The manifest the output already had (None: a new output, or one written before
    manifests existed)."""
    claim: OutputClaim | None = None
    """This run's claim on its tars in the output, once taken (``claim_tars``)."""


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


def check_backends(config: RunConfig) -> None:
    """Every URL's storage package is installed (else the error names the extra)."""
    for location, option in (
        (config.input_dir, "--input-dir"),
        (config.output_dir, "--output-dir"),
    ):
        if is_url(location):
            try:
                filesystem_class(scheme(str(location)))
            except StorageError as exc:
                raise ConfigError(f"{option}: {exc}") from exc


def check_hub_batching(config: RunConfig) -> None:
    """An ``hf://`` output is committed by the supervisor from the files its workers staged
    in the spool: on a cluster every node must stage where the driver can read."""
    from tartok_tui.output.hub_commit import commits_in_batches

    batched = commits_in_batches(config.output_dir)
    if config.ray_address is not None and batched and config.spool_dir is None:
        raise ConfigError(
            "--ray-address with an hf:// output: the driver commits the files the "
            "workers stage in the spool, so give --spool-dir a folder every node shares"
        )


def _check_input_dir(config: RunConfig) -> None:
    if not is_url(config.input_dir) and not Path(config.input_dir).is_dir():
        raise ConfigError(f"input directory does not exist: {config.input_dir}")


def _told(report: Report | None, what: str) -> Callable[[RetryEvent], None]:
    """An ``on_retry`` that says each retry (``what``: the check) where validation reports."""

    def retried(event: RetryEvent) -> None:
        if report is not None:
            report(f"{what}: {event}")

    return retried


def find_tars(
    config: RunConfig, report: Report | None = None
) -> tuple[list[Location], tuple[str, ...]]:
    """The tars in the run's range, and the shard-like files that are not read."""
    from tartok_tui.shards.discover import InputError, discover_shards, no_tars_message

    _check_input_dir(config)
    try:
        found = discover_shards(
            config.input_dir,
            config.from_index,
            config.to_index,
            config.recursive,
            reserved_top_dirs=RESERVED_TOP_DIRS,
            access=Access(options=config.storage_options, on_retry=_told(report, "input")),
        )
    except InputError as exc:
        raise ConfigError(redact_text(str(exc), config.storage_options)) from exc
    tars = [as_location(t) for t in found.tars]
    if not tars:
        raise ConfigError(
            no_tars_message(config.input_dir, config.from_index, config.to_index, config.recursive)
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


def check_manifest(config: RunConfig, model_dir: Path) -> tuple[Manifest, Manifest | None]:
    """This run's manifest, and the output's; ConfigError when the output's tokens were made
    by another model, precision or codec (resuming would mix them)."""
    from tartok_tui.codec.model_dir import ModelDirError

    try:
        manifest = build_manifest(model_dir, config.precision, tuple(config.audio_exts))
    except (ModelDirError, OSError) as exc:
        raise ConfigError(f"model dir: cannot fingerprint the weights: {exc}") from exc
    where = redact_location(config.output_dir)
    try:
        existing = read_manifest(config.output_dir, Access(options=config.storage_options))
    except ValueError as exc:
        raise ConfigError(f"output {where}: {MANIFEST_NAME} is unreadable: {exc}") from exc
    except (OSError, StorageError) as exc:
        reason = redact_text(str(exc), config.storage_options)
        raise ConfigError(f"output {where}: cannot read {MANIFEST_NAME}: {reason}") from exc
    if existing is not None and existing.fingerprint != manifest.fingerprint:
        lines = "\n  ".join(existing.differences(manifest))
        raise ConfigError(
            f"output {where} holds tokens made otherwise than this run would make them:\n"
            f"  {lines}\n"
            "Resuming would mix two kinds of tokens in one dataset. Write this run to "
            "another output directory, or run with the output's model and options "
            f"(see {MANIFEST_NAME} there, or `tartok-tui status`)."
        )
    return manifest, existing


def probe_writable(path: Path) -> None:
    """Make the directory and a file in it (OSError when either fails)."""
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
        pass


def check_writable(path: Path, what: str) -> None:
    try:
        probe_writable(path)
    except OSError as exc:
        raise ConfigError(f"{what} is not writable: {path} ({exc})") from exc


def check_store_writable(config: RunConfig, report: Report | None = None) -> None:
    """An output URL takes an object: one small upload, deleted at once, under the
    output's reserved ``logs/`` folder (never mistaken for a tar's output). A throttled
    store is waited for (each retry is reported); a refusal raises OutputRefused."""
    from tartok_tui.output.store import StoreOutput
    from tartok_tui.output.target import OutputUnavailable

    probe = PurePosixPath(LOGS_DIR) / f".write-check-{socket.gethostname()}-{os.getpid()}"
    where = redact_location(config.output_dir)
    try:
        access = Access(options=config.storage_options, on_retry=_told(report, "write check"))
        store = StoreOutput(str(config.output_dir), access)
        store.put_bytes(probe, b"tartok-tui write check\n")
        store.remove(probe)
    except OutputUnavailable as exc:
        reason = redact_text(str(exc), config.storage_options)
        raise OutputRefused(f"output {where} refuses writes: {reason}") from exc
    except (OSError, StorageError) as exc:
        reason = redact_text(str(exc), config.storage_options)
        raise ConfigError(f"output {where} is not writable: {reason}") from exc


def claim_tars(
    config: RunConfig, tars: list[Location], report: Report | None = None
) -> OutputClaim:
    """Claim the run's tars in the output (the last check: nothing else may fail after it
    without releasing the claim). ClaimRefused while another live run writes any of them;
    OutputRefused (exit 4) when the output refuses the claim's write; ``report``: told of
    each retry (a throttled store)."""
    from tartok_tui.output.claim import OutputClaim, Selection, claim_store
    from tartok_tui.output.target import OutputUnavailable

    input_dir = config.input_dir
    # One spelling per input, so runs naming it differently still compete for its tars.
    where = (
        redact_location(input_dir).rstrip("/") if is_url(input_dir) else os.path.realpath(input_dir)
    )
    selection = Selection(
        input=where,
        recursive=config.recursive,
        first=config.from_index,
        end=config.from_index + len(tars),
    )
    access = Access(options=config.storage_options, on_retry=_told(report, "claim"))
    where = redact_location(config.output_dir)
    try:
        store = claim_store(config.output_dir, access)
        return OutputClaim.acquire(store, selection, take_over=config.take_over)
    except OutputUnavailable as exc:
        reason = redact_text(str(exc), config.storage_options)
        raise OutputRefused(f"cannot claim the output {where}: {reason}") from exc
    except (OSError, StorageError) as exc:
        reason = redact_text(str(exc), config.storage_options)
        raise ConfigError(f"cannot claim the output {where}: {reason}") from exc


def validate(
    config: RunConfig, tars: list[Location] | None = None, report: Report | None = None
) -> ValidatedRun:
    """Check every argument before any worker starts; raises ConfigError.

    ``tars``: the tar list an earlier validation found (it is not searched again);
    ``report``: told of each retry of the output's write check (a throttled store)."""
    check_options(config)
    check_backends(config)
    check_hub_batching(config)
    ignored: tuple[str, ...] = ()
    if tars is None:
        tars, ignored = find_tars(config, report)
    else:
        _check_input_dir(config)
    local_output_dir = config.local_output_dir
    for tar in tars:
        try:
            tar_output_paths(local_output_dir, config.input_dir, tar)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    model_dir = check_model(config.model_dir)
    if config.output_is_url:
        from tartok_tui.output.spool import make_spool

        with contextlib.suppress(OSError):  # check_writable says what is wrong
            make_spool(config.local_output_dir)
        check_writable(config.local_output_dir, "spool directory")
        check_store_writable(config, report)
    else:
        check_writable(Path(config.output_dir), "output directory")
    check_writable(config.logs_path, "log directory")
    manifest, output_manifest = check_manifest(config, model_dir)
    if config.ray_address is not None:
        from tartok_tui.supervisor.ray_cluster import plan_cluster_slots

        placements = plan_cluster_slots(config)
    else:
        placements = plan_slots(config)
    return ValidatedRun(list(tars), model_dir, placements, ignored, manifest, output_manifest)

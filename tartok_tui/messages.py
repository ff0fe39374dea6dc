"""Typed messages between the supervisor and a worker subprocess.

Both sides import these definitions. On the wire each message is one JSON
object per line: ``{"type": <tag>, ...fields}``. Supervisor -> worker goes
over the worker's stdin, worker -> supervisor over its stdout. Worker logs
never go to stdout.
"""

from __future__ import annotations

import json
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any, ClassVar

_BY_TYPE: dict[str, type[Message]] = {}


class Message:
    """Base of every message; ``TYPE`` is its tag on the wire. Each subclass is
    registered under its ``TYPE`` as it is defined (the one list of known messages)."""

    TYPE: ClassVar[str]
    # Every message is a dataclass (set by @dataclass on each one); declared here so that
    # asdict() and fields() accept any Message.
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.TYPE in _BY_TYPE:
            raise TypeError(f"message type {cls.TYPE!r} registered twice")
        _BY_TYPE[cls.TYPE] = cls


# ---------------------------------------------------------------- supervisor -> worker


@dataclass(frozen=True)
class Lease(Message):
    """Process one tar and commit its output. ``isolate``: one sample at a time, each
    begun and finished with a message (IsolationBegin, IsolationDone), so that the
    supervisor knows which sample a worker that dies was in."""

    TYPE: ClassVar[str] = "lease"
    lease_id: int
    tar_path: str
    isolate: bool = False
    decided: list[dict[str, Any]] = field(default_factory=list)
    """Isolated only: the samples the tar's isolation journal has decided, as its lines
    (``output.journal``): finished by earlier leases (on any worker), or the sample a
    worker died in (a ``worker_crash`` error). Written as they are, not tokenized again."""
    stage_to: str | None = None
    """A folder to stage the tar's files in for the supervisor's batched commit (an
    ``hf://`` output, see ``output.staging``) instead of uploading them. The TarDone that
    follows then means "staged": the tar is done once that commit lands."""


@dataclass(frozen=True)
class Pause(Message):
    """Take no new batch until resumed."""

    TYPE: ClassVar[str] = "pause"


@dataclass(frozen=True)
class Resume(Message):
    TYPE: ClassVar[str] = "resume"


@dataclass(frozen=True)
class Stop(Message):
    """Finish the current tar (if any), then exit 0."""

    TYPE: ClassVar[str] = "stop"


@dataclass(frozen=True)
class Abort(Message):
    """Exit as soon as possible without committing the current tar."""

    TYPE: ClassVar[str] = "abort"


@dataclass(frozen=True)
class Cleanup(Message):
    """Free what can be freed now: gc, allocator caches."""

    TYPE: ClassVar[str] = "cleanup"


# ---------------------------------------------------------------- worker -> supervisor


@dataclass(frozen=True)
class Hello(Message):
    """First line a worker writes, before loading the model."""

    TYPE: ClassVar[str] = "hello"
    pid: int
    device: str


@dataclass(frozen=True)
class Ready(Message):
    """Model loaded; the worker takes leases now."""

    TYPE: ClassVar[str] = "ready"
    load_seconds: float
    device: str
    precision: str


@dataclass(frozen=True)
class LoadFailed(Message):
    """The model could not be loaded; the worker exits non-zero after this."""

    TYPE: ClassVar[str] = "load_failed"
    reason: str


@dataclass(frozen=True)
class TarStarted(Message):
    TYPE: ClassVar[str] = "tar_started"
    lease_id: int
    tar_path: str
    samples_expected: int | None = None


@dataclass(frozen=True)
class Progress(Message):
    """Cumulative counts for the current lease, sent at most a few times a second."""

    TYPE: ClassVar[str] = "progress"
    lease_id: int
    samples_done: int
    errors: int
    audio_seconds: float
    batches: int
    model_seconds: float
    """Wall seconds spent inside the tokenizer for this lease."""
    last_batch_ms: float = 0.0
    last_batch_size: int = 0
    samples_expected: int | None = None
    """The tar's sample count once known (counted alongside, so work starts at once)."""


@dataclass(frozen=True)
class TarDone(Message):
    """The tar's output is committed (fsynced and renamed)."""

    TYPE: ClassVar[str] = "tar_done"
    lease_id: int
    tar_path: str
    samples: int
    errors: int
    audio_seconds: float
    wall_seconds: float
    model_seconds: float


@dataclass(frozen=True)
class TarFailed(Message):
    """The tar could not be processed; nothing was committed. The worker stays up and
    takes the next lease (except after "oom").

    ``kind`` says what the supervisor does with the tar:

    - ``"tar"``: this tar cannot be done in this run (e.g. too many model errors in it);
      it is marked failed, and the next run tries it again.
    - ``"input"``: the input could not be read (I/O or network error, after retries);
      not the tar's fault: it goes back to the queue.
    - ``"output"``: the output cannot take more (no space, quota exceeded, read-only);
      the run stops leasing and exits with ``ExitCode.OUTPUT_UNAVAILABLE``.
    - ``"store"``: the output's object store could not be reached to upload (after
      retries); not the tar's fault: it goes back to the queue.
    - ``"oom"``: a clip ran out of device memory even alone; not the tar's fault: it goes
      back to the queue (a few times), and the worker exits right after for a clean
      allocator.
    """

    TYPE: ClassVar[str] = "tar_failed"
    lease_id: int
    tar_path: str
    reason: str
    kind: str = "tar"


@dataclass(frozen=True)
class SampleError(Message):
    """A sample (or the tar itself, key None) got an error record."""

    TYPE: ClassVar[str] = "sample_error"
    lease_id: int
    tar_path: str
    key: str | None
    stage: str
    reason: str


@dataclass(frozen=True)
class IsolationBegin(Message):
    """Isolated lease: the worker is about to decode and tokenize this sample. Should the
    worker die (or stall) before the sample's IsolationDone, the sample is the culprit."""

    TYPE: ClassVar[str] = "isolation_begin"
    lease_id: int
    index: int
    key: str


@dataclass(frozen=True)
class IsolationDone(Message):
    """Isolated lease: what came of the sample begun last, its record line or its error
    record (``stage``, ``reason``); journalled by the supervisor before anything else."""

    TYPE: ClassVar[str] = "isolation_done"
    lease_id: int
    index: int
    key: str
    record: dict[str, Any] | None = None
    stage: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Resources(Message):
    """Memory as the worker sees it; sent periodically and after cleanup."""

    TYPE: ClassVar[str] = "resources"
    gpu_reserved_mb: float = 0.0
    """Memory the worker's CUDA caching allocator holds (0 on the CPU)."""


@dataclass(frozen=True)
class StateChanged(Message):
    """Worker-side state changes the supervisor cannot infer: "paused" (no batch is
    running and none will start until resumed), "running", "idle"."""

    TYPE: ClassVar[str] = "state"
    state: str


@dataclass(frozen=True)
class Heartbeat(Message):
    """Sent every few seconds by a thread of its own, whatever the worker is doing.

    A message of any kind says the process is alive; ``progress`` says whether its work
    moves: a counter that only the pipeline advances (a sample read or decoded, a batch
    finished, a record written). A heartbeat with the same counter as the last one means
    alive but not progressing (a hung device call, a read that never returns).

    ``throttled``: what waits on a throttled store ("503 SlowDown reading s3://b/x.tar at
    byte 0"), None when nothing does; ``retry_in_s``: seconds until its next try, None
    while that try is under way. A throttled wait is not a stall.
    """

    TYPE: ClassVar[str] = "heartbeat"
    progress: int
    throttled: str | None = None
    retry_in_s: float | None = None


@dataclass(frozen=True)
class Log(Message):
    """A notable event for the event log (not for routine chatter)."""

    TYPE: ClassVar[str] = "log"
    level: str
    message: str


class ProtocolError(ValueError):
    """A line that is not a valid message."""


def encode(msg: Message) -> bytes:
    """One message as one UTF-8 JSON line, newline included."""
    payload: dict[str, Any] = {"type": msg.TYPE, **asdict(msg)}
    return (json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def decode(line: bytes | str) -> Message:
    """Parse one line; raises ProtocolError on anything that is not a known message."""
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {line[:200]!r}") from exc
    if not isinstance(obj, dict) or "type" not in obj:
        raise ProtocolError(f"not a message object: {line[:200]!r}")
    cls = _BY_TYPE.get(obj.pop("type"))
    if cls is None:
        raise ProtocolError(f"unknown message type in {line[:200]!r}")
    names = {f.name for f in fields(cls)}
    unknown = set(obj) - names
    if unknown:
        raise ProtocolError(f"unknown fields {sorted(unknown)} for {cls.TYPE}")
    try:
        return cls(**obj)
    except TypeError as exc:
        raise ProtocolError(f"bad fields for {cls.TYPE}: {exc}") from exc
